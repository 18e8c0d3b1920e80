//! EPC capacity from CPUID leaf 0x12 (being built).
