//! containerd's task event topics.

pub const TASK_CREATE: &str = "/tasks/create";
pub const TASK_START: &str = "/tasks/start";
pub const TASK_EXIT: &str = "/tasks/exit";
pub const TASK_OOM: &str = "/tasks/oom";
pub const TASK_EXEC_ADDED: &str = "/tasks/exec-added";
pub const TASK_EXEC_STARTED: &str = "/tasks/exec-started";
pub const TASK_PAUSED: &str = "/tasks/paused";
pub const TASK_RESUMED: &str = "/tasks/resumed";
pub const TASK_CHECKPOINTED: &str = "/tasks/checkpointed";
pub const TASK_DELETE: &str = "/tasks/delete";
