#![no_std]
// This file exists to enable the library target, so that scaph-agent can
// build-depend on this crate and cargo reruns its build.rs when it changes.
