//! Device slots: where jobs run. `devices = "auto"` means every CUDA device libtorch sees (the
//! count is passed in, so this module needs no libtorch), else the CPU.

use crate::manifest::{Device, DeviceRequest, Resources};

#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub device: Device,
    /// Intra-op threads for jobs in this slot.
    pub threads: u32,
}

impl Slot {
    /// `CUDA_VISIBLE_DEVICES` for the child, and the device name it should then use.
    pub fn child_device(&self) -> (String, String) {
        match self.device {
            Device::Cpu => (String::new(), "cpu".into()),
            Device::Cuda(i) => (i.to_string(), "cuda:0".into()),
        }
    }
}

/// Expands resources into slots. `cuda_devices` is what libtorch reports; `cores` the CPU count.
pub fn slots(resources: &Resources, cuda_devices: u32, cores: u32) -> Vec<Slot> {
    let devices: Vec<Device> = match &resources.devices {
        DeviceRequest::Auto if cuda_devices > 0 => (0..cuda_devices).map(Device::Cuda).collect(),
        DeviceRequest::Auto => vec![Device::Cpu],
        DeviceRequest::List(list) => list.clone(),
    };
    let per = resources.jobs_per_device.max(1);
    let total = devices.len() as u32 * per;
    let cpu_jobs = devices.iter().filter(|d| **d == Device::Cpu).count() as u32 * per;
    let mut out = Vec::new();
    for device in devices {
        let threads = match (resources.threads, device) {
            (t, _) if t > 0 => t,
            (_, Device::Cpu) => (cores / cpu_jobs.max(1)).max(1),
            (_, Device::Cuda(_)) => (cores / total.max(1)).max(1),
        };
        for _ in 0..per {
            out.push(Slot { device, threads });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_uses_every_gpu_else_cpu() {
        let r = Resources {
            jobs_per_device: 2,
            ..Resources::default()
        };
        let s = slots(&r, 2, 16);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].device, Device::Cuda(0));
        assert_eq!(s[3].device, Device::Cuda(1));
        assert_eq!(s[0].threads, 4);
        let s = slots(&r, 0, 16);
        assert_eq!(
            s.iter().map(|x| x.device).collect::<Vec<_>>(),
            vec![Device::Cpu, Device::Cpu]
        );
        assert_eq!(s[0].threads, 8);
        assert_eq!(s[0].child_device(), (String::new(), "cpu".to_string()));
        assert_eq!(
            Slot {
                device: Device::Cuda(3),
                threads: 1
            }
            .child_device(),
            ("3".to_string(), "cuda:0".to_string())
        );
    }
}
