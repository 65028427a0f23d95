//! The server-side scripts called directly, with no process around them: states no process
//! produces on demand (a waiter whose lease has run out and that no reaper has seen yet: every
//! process reaps every 500 ms) are made exactly, and nothing reaps behind the test's back.

mod support;

use std::time::Duration;

use support::Server;

const PREFIX: &str = "taskherd:{scripts}:";

/// A script as the library sends it: `lib.lua` followed by the script's own file.
fn script(own: &str) -> String {
    format!("{}\n{own}", include_str!("../scripts/lib.lua"))
}

fn release_script() -> String {
    script(include_str!("../scripts/release.lua"))
}

fn admit_script() -> String {
    script(include_str!("../scripts/admit.lua"))
}

/// Runs `script` with the pool's prefix as its key and `args`; returns the raw reply.
fn eval(server: &Server, script: &str, args: &[&str]) -> String {
    let mut command = vec!["EVAL", script, "1", PREFIX];
    command.extend_from_slice(args);
    let reply = server.cmd(&command).expect("the test server answers");
    assert!(!reply.starts_with('-'), "script error: {reply}");
    reply
}

/// One admission through `admit.lua` (no releases first), for `owner`'s process with `lease`.
fn admit(
    server: &Server,
    owner: &str,
    lease: Duration,
    mode: &str,
    id: &str,
    group: &str,
) -> String {
    let lease = lease.as_millis().to_string();
    eval(
        server,
        &admit_script(),
        &[&lease, owner, "100", "0", "0", mode, id, "1", group],
    )
}

/// A holder's id is in `h` (admitted, granted waiters included).
fn holds(server: &Server, id: &str) -> bool {
    let reply = server.cmd(&["ZSCORE", &format!("{PREFIX}h"), id]).unwrap();
    !reply.starts_with("$-1")
}

/// `db` has a limit of 1, held by `p1:1`; the dead process's waiter `dead:1` queues first, the
/// live one's `live:1` behind it; then the dead one's lease runs out. (Its expiry is set in the
/// past rather than waited for: a short lease could run out before `live:1` queues, whose
/// admission, finding `db` full, would reap it first.)
fn held_with_a_dead_waiter_first() -> Server {
    let server = Server::start();
    server
        .cmd(&["HSET", &format!("{PREFIX}lim"), "g:db", "1"])
        .unwrap();
    for (owner, mode, id, answer) in [
        ("p1", "try", "p1:1", 1),
        ("dead", "wait", "dead:1", 2),
        ("live", "wait", "live:1", 2),
    ] {
        let reply = admit(&server, owner, Duration::from_secs(60), mode, id, "db");
        // Then 1: the pool has limits (`lim`).
        assert_eq!(reply, format!("*3\r\n:{answer}\r\n:0\r\n:1\r\n"), "{id}");
    }
    let expired = server
        .cmd(&["ZADD", &format!("{PREFIX}wl"), "XX", "CH", "1", "dead:1"])
        .unwrap();
    assert_eq!(expired, ":1\r\n");
    server
}

/// The slot went to the live waiter, not the dead one.
fn assert_granted_to_the_live_waiter(server: &Server) {
    assert!(
        !holds(server, "dead:1"),
        "the expired waiter was granted the slot"
    );
    assert!(
        holds(server, "live:1"),
        "the live waiter did not get the slot"
    );
    // Its process is told; the dead one's waiter is gone, untold.
    let told = server
        .cmd(&["LRANGE", &format!("{PREFIX}n:live"), "0", "-1"])
        .unwrap();
    assert!(told.contains("live:1"), "{told}");
    for gone in ["w:dead:1", "n:dead"] {
        let exists = server.cmd(&["EXISTS", &format!("{PREFIX}{gone}")]).unwrap();
        assert_eq!(exists, ":0\r\n", "{gone}");
    }
    // Two admissions in all: the first holder and the live waiter.
    let admitted = server
        .cmd(&["HGET", &format!("{PREFIX}st"), "a:g:db"])
        .unwrap();
    assert_eq!(admitted, "$1\r\n2\r\n");
}

/// A waiter whose lease ran out (its process stopped renewing it) and that no reaper has seen
/// yet is not handed the slot a release frees: the live waiter behind it is, at once. Before,
/// the dead waiter became a holder with its expired lease, the live one waited up to a reap
/// interval longer, and the statistics counted an admission nobody made. Found by a review.
#[test]
fn a_release_does_not_hand_a_slot_to_a_waiter_whose_lease_ran_out() {
    let server = held_with_a_dead_waiter_first();
    assert_eq!(eval(&server, &release_script(), &["100", "p1:1"]), ":1\r\n");
    assert_granted_to_the_live_waiter(&server);
}

/// The same for the releases an admission carries (a process gives back what it released
/// since its last call at the start of its next admission call).
#[test]
fn an_admissions_releases_do_not_hand_a_slot_to_a_waiter_whose_lease_ran_out() {
    let server = held_with_a_dead_waiter_first();
    // p1 releases its holder at the start of an admission in another group, which has room.
    let reply = eval(
        &server,
        &admit_script(),
        &[
            "60000", "p1", "100", "0", "1", "p1:1", "try", "p1:2", "1", "other",
        ],
    );
    // Admitted; the pool has limits (`lim`).
    assert_eq!(reply, "*3\r\n:1\r\n:0\r\n:1\r\n");
    assert_granted_to_the_live_waiter(&server);
}
