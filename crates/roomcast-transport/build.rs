//! The web app's built files are embedded with `include_dir!`, which only
//! tracks the files it saw: a rebuild of `web/dist` adds files with new
//! hashed names. Watching the folder makes cargo rebuild this crate then.
fn main() {
    println!("cargo:rerun-if-changed=../../web/dist");
}
