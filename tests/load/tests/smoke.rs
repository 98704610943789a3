//! `clio-load all --smoke` in the test command: every row runs at tiny sizes through the
//! library (import-svc in this process), the import's three contenders each store every
//! record, the concurrent jobs and both `COPY`s store every row, the refresh storm
//! refreshes every connection once, and every row measures something. Speed targets are
//! not asserted: shared CI machines drift.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use load::{Bench, ImportHost, Sizes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_runs_at_smoke_sizes() {
    let sizes = Sizes::smoke(ImportHost::InProcess);

    let import = load::import::run(&sizes.import).await.unwrap();
    let n = sizes.import.records;
    assert_eq!(import.service.stored, n as i64, "import-svc");
    assert_eq!(import.competent.stored, n as i64, "competent script");
    assert_eq!(import.competent.records, n);
    assert_eq!(
        import.naive.stored, sizes.import.naive_records as i64,
        "naive script"
    );
    assert_eq!(
        import.naive_records, n,
        "the naive script covers every record at smoke size"
    );

    // The rate-limited rows mostly wait for their windows, and the two rows below mostly
    // set up (connections, databases): side by side they take about the time of one.
    let (rate, concurrent, storm) = tokio::join!(
        load::rate_limited::run(&sizes.rate),
        load::concurrent_import::run(&sizes.concurrent),
        load::refresh_storm::run(&sizes.storm),
    );
    let (rate, concurrent, storm) = (rate.unwrap(), concurrent.unwrap(), storm.unwrap());
    let all = sizes.concurrent.records_per_job as i64 * sizes.concurrent.jobs as i64;
    assert_eq!(concurrent.jobs.stored, all, "concurrent jobs");
    assert_eq!(concurrent.jobs.accounts, sizes.concurrent.jobs as i64);
    assert_eq!(
        concurrent.copy_parallel.stored, all,
        "COPY, many connections"
    );
    assert_eq!(concurrent.copy_single.stored, all, "COPY, one connection");
    let n = sizes.storm.connections;
    assert_eq!(storm.refreshed, n, "every connection refreshed");
    assert_eq!(storm.grants_refreshed, n);
    assert_eq!(storm.most_calls_of_one, 1, "one Clio refresh each");
    assert_eq!(storm.refresh_calls, n as u64);
    assert_eq!(storm.storm.failures, 0);

    let lease = load::lease::run(&sizes.lease).await.unwrap();
    assert!(lease.lease.calls > 0 && lease.health.calls > 0);
    assert_eq!(lease.lease.failures, 0);

    let mut rows = import.rows;
    rows.extend(concurrent.rows);
    rows.extend(storm.rows);
    rows.extend(lease.rows);
    rows.push(
        load::audit::record(sizes.audit_record_events)
            .await
            .unwrap(),
    );
    rows.extend(rate);
    rows.push(
        load::offboarding::run(sizes.offboarding_connections)
            .await
            .unwrap(),
    );
    rows.push(
        load::audit::verify_chain(sizes.audit_verify_events)
            .await
            .unwrap(),
    );

    for bench in Bench::ALL {
        assert!(
            rows.iter()
                .any(|r| r.command.contains(&format!(" {} ", bench.name()))),
            "no row of {}",
            bench.name()
        );
    }
    for row in &rows {
        assert!(row.figure > 0.0 && row.figure.is_finite(), "{row:?}");
        if let Some(reference) = &row.reference {
            assert!(reference.value > 0.0, "{row:?}");
        }
    }
    println!("{}", load::row::table(&rows));
}
