//! The private PostgreSQL cluster of the harness (`drover_tests::postgres`)
//! is a real server on a Unix socket of its own, that a test can stop and
//! start again with its data kept.

use drover_tests::postgres::Postgres;

#[test]
fn a_row_survives_a_stop_and_a_start_again() {
    let mut db = Postgres::start();
    db.psql("CREATE TABLE kept (id int PRIMARY KEY, word text)");
    db.psql("INSERT INTO kept VALUES (1, 'drover')");
    assert_eq!(db.psql("SELECT word FROM kept WHERE id = 1"), "drover");

    db.stop();
    let refused = db
        .try_psql("SELECT 1")
        .expect_err("psql succeeded with the server stopped");
    assert!(
        refused.contains(&db.socket_dir().display().to_string()),
        "psql failed, but not for want of the cluster's socket: {refused}"
    );

    db.start_again();
    assert_eq!(db.psql("SELECT word FROM kept WHERE id = 1"), "drover");
}

#[test]
fn the_cluster_listens_on_its_unix_socket_only() {
    let db = Postgres::start();
    assert_eq!(db.psql("SHOW listen_addresses"), "");
    assert_eq!(
        db.psql("SHOW unix_socket_directories"),
        db.socket_dir().display().to_string()
    );
    assert!(db.socket_dir().join(".s.PGSQL.5432").exists());
    assert_eq!(db.psql("SELECT current_user"), db.user());
}

#[test]
fn dropping_the_cluster_stops_the_server_and_removes_its_directory() {
    let db = Postgres::start();
    let (pid, dir) = (db.pid(), db.dir().to_path_buf());
    drop(db);
    assert!(!dir.exists(), "{} left behind", dir.display());
    // The server was this process's child and has been reaped: its pid
    // names no process (or, at worst, a newer one that is not postgres).
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_ne!(comm.trim(), "postgres", "postgres {pid} still running");
}

#[test]
fn each_cluster_is_its_own() {
    let first = Postgres::start();
    let second = Postgres::start();
    assert_ne!(first.socket_dir(), second.socket_dir());
    first.psql("CREATE TABLE only_in_first (id int)");
    let missing = second
        .try_psql("SELECT * FROM only_in_first")
        .expect_err("a table of one cluster is seen in another");
    assert!(missing.contains("only_in_first"), "{missing}");
}
