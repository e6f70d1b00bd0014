mod cputime;
mod sensors;
fn main() {}
