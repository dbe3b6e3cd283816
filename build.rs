// Builds the host emulation of the CUDA kernels (kernels/host_emulation.cpp, which includes the
// shipped kernels/match.cu) when the `kernel-emulation` feature is on; the tests in
// src/cuda/emulation.rs run it against the CPU metrics. Release builds compile nothing here.
fn main() {
    println!("cargo:rerun-if-changed=kernels");
    if std::env::var_os("CARGO_FEATURE_KERNEL_EMULATION").is_some() {
        cc::Build::new()
            .cpp(true)
            .file("kernels/host_emulation.cpp")
            .flag_if_supported("-std=c++17")
            .opt_level(2)
            .warnings(true)
            .compile("kato_kernels_emulated");
    }
}
