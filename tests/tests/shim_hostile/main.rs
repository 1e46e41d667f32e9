//! The hostile-input table: raw ttrpc calls straight to a real shim's socket (started by a real
//! containerd), each against a container in a given state. Every row is a name, the state it
//! needs, the call, and the answers that are right (containerd's Go shim and ttrpc, or what the
//! shim's design says where those are wrong). After each row the shim process is alive (by
//! pid), it answers `State`, and the container runs on (or stays exited).
//!
//! Rows that cannot change a container share one per table; a row that changes state, or might
//! kill the shim when the shim is wrong, gets a fresh container. Every row runs even when an
//! earlier one failed; the test fails at the end listing every row that went wrong.

use protobuf::Message;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;
use tether_protocol::api::runc_options::Options;
use tether_protocol::api::task::*;
use tether_protocol::api::ttrpc::Code;
use tether_protocol::api::{pack_any, Any};
use tether_protocol::task_service::TASK_SERVICE_V2;
use tether_tests::rawttrpc::{self, process_spec, request_frame};
use tether_tests::shimtest::Scene;
use tether_tests::{busybox_rootfs, procs, shim, unique_id, Containerd, Ctr, TETHER_RUNTIME};

mod frames;
mod ids;
mod requests;
mod runtime;
mod second;
mod states;
mod table;

use frames::*;
use ids::*;
use requests::*;
use runtime::*;
use second::*;
use states::*;
use table::*;

#[test]
fn ids_payloads_and_methods_get_the_right_codes() {
    Table::new().run(ids_and_payloads());
}

#[test]
fn processes_in_the_wrong_state_get_the_right_codes() {
    Table::new().run(wrong_states());
}

#[test]
fn bad_frames_and_connections_leave_the_shim_serving() {
    Table::new().run(frames_and_connections());
}

#[test]
fn a_runtime_call_past_its_deadline_gets_deadline_exceeded() {
    Table::new().run(vec![Row {
        name: "Pause through a runtime that hangs, 2 s deadline",
        setup: Setup::Running,
        call: hanging_runtime,
        expect: &[DEADLINE],
    }]);
}

#[test]
fn what_the_shim_holds_does_not_leak_into_its_children() {
    Table::new().run(vec![Row {
        name: "a runtime command's fds: not the shim's listening socket",
        setup: Setup::Shared,
        call: runtime_inherits_no_listener,
        expect: &[OK],
    }]);
}

#[test]
fn what_a_request_names_cannot_stall_or_grow_the_shim() {
    Table::new().run(vec![
        Row {
            name: "Create with stdout file:// a FIFO nobody reads",
            setup: Setup::Shared,
            call: log_file_is_a_fifo,
            expect: &[INVALID, INTERNAL],
        },
        Row {
            name: "Create whose config_path is a FIFO, then /dev/zero",
            setup: Setup::Shared,
            call: config_path_is_not_a_file,
            expect: &[INVALID],
        },
        Row {
            name: "Exec past the bound of execs per container",
            setup: Setup::Shared,
            call: execs_are_bounded,
            expect: &[EXHAUSTED],
        },
        Row {
            name: "Create with BinaryName, Root or CriuPath relative",
            setup: Setup::Shared,
            call: relative_option_paths,
            expect: &[INVALID],
        },
    ]);
}

/// The table is as large as the issue asks (at least 40 raw calls).
#[test]
fn the_table_has_at_least_40_rows() {
    let n = ids_and_payloads().len() + wrong_states().len() + frames_and_connections().len() + 6;
    assert!(n >= 40, "{n} rows");
}
