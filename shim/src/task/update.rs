//! `Update`: the new resources (a JSON `LinuxResources`) go to a file in the bundle for `runc
//! update --resources`, removed once it exits.

use super::call::Then;
use super::{encode, find, Ctx, Flow, Service};
use crate::error::{Result, ShimError};
use std::path::Path;
use tether_protocol::api::task::UpdateTaskRequest;
use tether_protocol::api::Empty;

impl Service {
    pub(super) fn update(&mut self, req: UpdateTaskRequest, ctx: Ctx) -> Flow {
        let begun = (|| -> Result<Flow> {
            let c = find(&mut self.containers, &req.id)?;
            let Some(res) = req.resources.as_ref() else {
                return Err(ShimError::InvalidArgument(format!(
                    "container {}: update without resources",
                    req.id
                )));
            };
            serde_json::from_slice(&res.value)
                .map_err(|e| e.to_string())
                .and_then(|json| crate::spec::check::<crate::spec::Resources>(&json))
                .map_err(|e| {
                    ShimError::InvalidArgument(format!(
                        "container {}: update resources are not valid JSON LinuxResources: {e}",
                        req.id
                    ))
                })?;
            let path = c.bundle.join("update-resources.json");
            std::fs::write(&path, &res.value)
                .map_err(ShimError::io(format!("write {}", path.display())))?;
            let call = c.runtime.update(&c.id, &path)?;
            Ok(self.park(ctx, call, Then::Update { path }))
        })();
        begun.unwrap_or_else(|e| Flow::Done(Err(e)))
    }

    pub(super) fn updated(&mut self, path: &Path, result: Result<String>) -> Result<Vec<u8>> {
        let _ = std::fs::remove_file(path);
        result.and_then(|_| encode(&Empty::new()))
    }
}
