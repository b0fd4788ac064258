//! `--device cpu|wgpu|cuda`, parsed in this one place for every command.
//!
//! `cpu` is Burn's pure-Rust `flex` backend and always present; `wgpu` and `cuda` exist only
//! when Nuri is built with the Cargo feature of the same name.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use thiserror::Error;

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The CPU, through Burn's flex backend.
    Cpu,
    /// A GPU through wgpu (Vulkan, Metal, DX12); also Mesa's lavapipe on a CPU-only machine.
    Wgpu,
    /// The first NVIDIA GPU, through CUDA.
    Cuda,
}

/// Why a device cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("unknown device '{0}': expected one of cpu, wgpu, cuda")]
    Unknown(String),
    #[error(
        "the {choice} device is not in this build of nuri: rebuild with `--features {feature}` \
         (see the README's feature table for what it needs installed)"
    )]
    NotBuilt {
        choice: DeviceChoice,
        feature: &'static str,
    },
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Wgpu => "wgpu",
            DeviceChoice::Cuda => "cuda",
        })
    }
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "wgpu" => Ok(DeviceChoice::Wgpu),
            "cuda" => Ok(DeviceChoice::Cuda),
            _ => Err(DeviceError::Unknown(s.to_string())),
        }
    }
}

impl DeviceChoice {
    /// The devices this build can make.
    pub fn available() -> Vec<DeviceChoice> {
        [DeviceChoice::Cpu, DeviceChoice::Wgpu, DeviceChoice::Cuda]
            .into_iter()
            .filter(|choice| choice.device().is_ok())
            .collect()
    }

    /// `n` devices of this kind for data-parallel training: CUDA devices 0..n, discrete GPUs
    /// 0..n through wgpu, or on the CPU the same cores n times (shards on threads).
    pub fn devices(self, n: usize) -> Result<Vec<Device>, DeviceError> {
        let first = self.device()?;
        if n <= 1 {
            return Ok(vec![first]);
        }
        Ok(match self {
            DeviceChoice::Cpu => vec![first; n],
            DeviceChoice::Wgpu => indexed_wgpu(n),
            DeviceChoice::Cuda => indexed_cuda(n),
        })
    }

    /// The Burn device for this choice, or why this build has none.
    pub fn device(self) -> Result<Device, DeviceError> {
        match self {
            DeviceChoice::Cpu => Ok(Device::flex()),
            DeviceChoice::Wgpu => wgpu_device(),
            DeviceChoice::Cuda => cuda_device(),
        }
    }
}

#[cfg(feature = "wgpu")]
fn indexed_wgpu(n: usize) -> Vec<Device> {
    (0..n)
        .map(|i| Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(i)))
        .collect()
}

#[cfg(not(feature = "wgpu"))]
fn indexed_wgpu(_: usize) -> Vec<Device> {
    unreachable!("device() failed first")
}

#[cfg(feature = "cuda")]
fn indexed_cuda(n: usize) -> Vec<Device> {
    (0..n).map(Device::cuda).collect()
}

#[cfg(not(feature = "cuda"))]
fn indexed_cuda(_: usize) -> Vec<Device> {
    unreachable!("device() failed first")
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device, DeviceError> {
    Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<Device, DeviceError> {
    Err(DeviceError::NotBuilt {
        choice: DeviceChoice::Wgpu,
        feature: "wgpu",
    })
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Result<Device, DeviceError> {
    Ok(Device::cuda(0))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Result<Device, DeviceError> {
    Err(DeviceError::NotBuilt {
        choice: DeviceChoice::Cuda,
        feature: "cuda",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_case_insensitively_and_rejects_others() {
        assert_eq!("CPU".parse::<DeviceChoice>(), Ok(DeviceChoice::Cpu));
        assert_eq!(" wgpu".parse::<DeviceChoice>(), Ok(DeviceChoice::Wgpu));
        assert_eq!("cuda".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda));
        let err = "tpu".parse::<DeviceChoice>().unwrap_err();
        assert!(err.to_string().contains("'tpu'"), "{err}");
    }

    #[test]
    fn cpu_is_always_available() {
        assert!(DeviceChoice::available().contains(&DeviceChoice::Cpu));
        assert!(DeviceChoice::Cpu.device().is_ok());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_device_left_out_of_the_build_is_a_clear_error() {
        let err = DeviceChoice::Cuda.device().unwrap_err();
        assert_eq!(
            err,
            DeviceError::NotBuilt {
                choice: DeviceChoice::Cuda,
                feature: "cuda"
            }
        );
        assert!(err.to_string().contains("--features cuda"), "{err}");
    }
}
