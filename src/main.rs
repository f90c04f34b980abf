fn main() {
    println!("wsrelay {}", env!("CARGO_PKG_VERSION"));
}
