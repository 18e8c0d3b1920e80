//! Prints the MRENCLAVE of a Gramine manifest (`.manifest.sgx`) with a given `libpal.so`, as
//! `coffer_sgx::gramine::measure` computes it. Used to compare with Gramine's own signer.
//!
//!     cargo run -p coffer-sgx --example gramine_mrenclave -- app.manifest.sgx /path/to/sgx/libpal.so

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: gramine_mrenclave MANIFEST LIBPAL");
        std::process::exit(2);
    }
    let manifest = std::fs::read(&args[1]).expect("reading the manifest");
    let pal = std::fs::read(&args[2]).expect("reading libpal.so");
    match coffer_sgx::gramine::measure(&manifest, &pal, &coffer_sgx::gramine::LayoutConstants::V1) {
        Ok(m) => println!("{}", hex::encode(m.mrenclave)),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
