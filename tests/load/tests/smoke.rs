//! `clio-load all --smoke` in the test command: every row runs at tiny sizes through the
//! library (import-svc in this process), the import's three contenders each store every
//! record, and every row measures something. Speed targets are not asserted: shared CI
//! machines drift.

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

    let lease = load::lease::run(&sizes.lease).await.unwrap();
    assert!(lease.lease.calls > 0 && lease.health.calls > 0);
    assert_eq!(lease.lease.failures, 0);

    let mut rows = import.rows;
    rows.extend(lease.rows);
    rows.push(
        load::audit::record(sizes.audit_record_events)
            .await
            .unwrap(),
    );
    rows.extend(load::rate_limited::run(&sizes.rate).await.unwrap());
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
