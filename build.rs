// Builds the host emulation of the CUDA kernels (kernels/host_emulation.cpp, which includes the
// shipped kernels/match.cu) when the `kernel-emulation` feature is on; the tests in
// src/cuda/emulation.rs run it against the CPU metrics. Release builds compile nothing here.
//
// The kernels' limits come from src/cuda/limits.rs, as for NVRTC: its `#define` block is written
// to $OUT_DIR/kato_limits.h, which host_emulation.cpp includes before the kernel source.

#[allow(dead_code)]
mod limits {
    include!("src/cuda/limits.rs");
}

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=src/cuda/limits.rs");
    if std::env::var_os("CARGO_FEATURE_KERNEL_EMULATION").is_some() {
        let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        std::fs::write(out.join("kato_limits.h"), limits::prelude()).expect("cannot write kato_limits.h");
        cc::Build::new()
            .cpp(true)
            .file("kernels/host_emulation.cpp")
            .include(&out)
            .flag_if_supported("-std=c++17")
            .opt_level(2)
            // The kernels read u16 tables as u32 words, as CUDA allows.
            .flag("-fno-strict-aliasing")
            // `#pragma unroll` is for the device compiler.
            .flag("-Wno-unknown-pragmas")
            .warnings(true)
            .compile("kato_kernels_emulated");
    }
}
