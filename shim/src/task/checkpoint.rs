//! `Checkpoint` through the runtime and CRIU, of a running or paused container; when `runc
//! checkpoint` exits, `TaskCheckpointed` is published.

use super::call::Then;
use super::{encode, find, Ctx, Flow, Service};
use crate::error::{Result, ShimError};
use protobuf::MessageField;
use std::path::PathBuf;
use tether_protocol::api::events::TaskCheckpointed;
use tether_protocol::api::runc_options::CheckpointOptions;
use tether_protocol::api::task::{CheckpointTaskRequest, Status};
use tether_protocol::api::{Empty, TypeUrl};
use tether_protocol::topics;

/// A checkpoint in flight: whose, and where its image goes.
pub(super) struct Checkpointed {
    id: String,
    image: PathBuf,
}

impl Service {
    /// The image goes to `path`; CRIU's own logs to the options' work path, else beside the
    /// image, so a failure can be read afterwards.
    pub(super) fn checkpoint(&mut self, req: CheckpointTaskRequest, ctx: Ctx) -> Flow {
        let begun = (|| -> Result<Flow> {
            let opts: CheckpointOptions = options(&req.options, "checkpoint")?;
            let image = if opts.image_path.is_empty() {
                PathBuf::from(&req.path)
            } else {
                PathBuf::from(&opts.image_path)
            };
            if !image.is_absolute() {
                return Err(ShimError::InvalidArgument(format!(
                    "container {}: checkpoint path {:?} is not absolute",
                    req.id,
                    image.display()
                )));
            }
            let work = if opts.work_path.is_empty() {
                image.clone()
            } else {
                PathBuf::from(&opts.work_path)
            };
            let c = find(&mut self.containers, &req.id)?;
            if !matches!(c.init.status(), Status::RUNNING | Status::PAUSED) {
                return Err(ShimError::FailedPrecondition(format!(
                    "container {}: only a running or paused container can be checkpointed",
                    req.id
                )));
            }
            for dir in [&image, &work] {
                std::fs::create_dir_all(dir)
                    .map_err(ShimError::io(format!("create {}", dir.display())))?;
            }
            let call = c.runtime.checkpoint(&c.id, &image, &work, &opts)?;
            let then = Then::Checkpoint(Checkpointed { id: req.id, image });
            Ok(self.park(ctx, call, then))
        })();
        begun.unwrap_or_else(|e| Flow::Done(Err(e)))
    }

    pub(super) fn checkpointed(
        &mut self,
        c: Checkpointed,
        result: Result<String>,
    ) -> Result<Vec<u8>> {
        result?;
        let ev = TaskCheckpointed {
            container_id: c.id,
            checkpoint: c.image.display().to_string(),
            ..Default::default()
        };
        self.publisher
            .publish(&self.registry, topics::TASK_CHECKPOINTED, &ev);
        encode(&Empty::new())
    }
}

/// Options of type `M` from a request's `Any` (`what` names them in errors): absent or empty
/// gives the defaults; another type or bad bytes are InvalidArgument.
fn options<M: TypeUrl + Default>(
    any: &MessageField<tether_protocol::api::Any>,
    what: &str,
) -> Result<M> {
    tether_protocol::api::unpack_any_or_default(any.as_ref())
        .map_err(|e| ShimError::InvalidArgument(format!("{what} {e}")))
}
