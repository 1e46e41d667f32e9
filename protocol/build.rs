//! Compiles the manager's own API (`proto/tether/manager/v1/manager.proto`) with ttrpc-codegen.
//! containerd's own protos come from `containerd-shim-protos`, never from this tree.

use std::fs;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let proto = "proto/tether/manager/v1/manager.proto";
    println!("cargo:rerun-if-changed={proto}");
    ttrpc_codegen::Codegen::new()
        .out_dir(&out)
        .include("proto")
        .input(proto)
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            ..Default::default()
        })
        .run()
        .expect("compile manager.proto");
    // protobuf-codegen emits inner attributes, which `include!` cannot take: the modules are
    // declared by path instead.
    let module = format!(
        "#[path = {:?}]\npub mod manager;\n#[path = {:?}]\npub mod manager_ttrpc;\n",
        out.join("manager.rs"),
        out.join("manager_ttrpc.rs")
    );
    fs::write(out.join("manager_api.rs"), module).expect("write manager_api.rs");
}
