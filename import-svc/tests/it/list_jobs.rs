//! ListJobs over gRPC: filters by connection and status, pages that walk every job exactly
//! once, and bad arguments refused naming the field.
//!
//! The jobs are stored with the service's own store functions and never published, so no
//! consumer moves them on while the test lists them.

use std::collections::BTreeSet;

use harness::{channel, token_of, with_bearer};
use import_svc::job::spec;
use import_svc::job::store::{self, JobStatus};
use proto::imports::v1 as pb;
use proto::imports::v1::import_service_client::ImportServiceClient;
use tonic::Code;

use crate::support::{RunningImport, Setup, start};

/// The jobs the tests list: (connection, final status or `None` for still queued).
const JOBS: [(&str, Option<JobStatus>); 7] = [
    ("c-a", Some(JobStatus::Completed)),
    ("c-b", Some(JobStatus::Completed)),
    ("c-a", Some(JobStatus::Failed)),
    ("c-a", None),
    ("c-b", Some(JobStatus::Cancelled)),
    ("c-a", Some(JobStatus::Completed)),
    ("c-b", None),
];

/// Stores [`JOBS`] (oldest first) and returns their ids in the same order.
async fn store_jobs(import: &RunningImport) -> Vec<String> {
    let mut db = import.database.connect().await;
    let mut ids = Vec::new();
    for (connection, status) in JOBS {
        let wire = pb::ImportJob {
            connection_id: connection.into(),
            resources: vec!["contacts".into()],
            mode: pb::ImportMode::Full as i32,
            requested_by: "list-test".into(),
            ..Default::default()
        };
        let job = spec::validate(wire, true).unwrap();
        assert!(store::insert_queued(&mut db, &job).await.unwrap());
        if let Some(status) = status {
            let reason = (status == JobStatus::Failed).then_some("it broke");
            store::finish(&mut db, job.job_id, status, reason)
                .await
                .unwrap()
                .unwrap();
        }
        ids.push(job.job_id.to_string());
    }
    ids
}

async fn list(
    import: &RunningImport,
    request: pb::ListJobsRequest,
) -> Result<pb::ListJobsResponse, tonic::Status> {
    ImportServiceClient::new(channel(import.address).await)
        .list_jobs(with_bearer(request, &token_of("operator")))
        .await
        .map(tonic::Response::into_inner)
}

/// Follows `next_page_token` from the first page to the last; returns each page's ids.
async fn walk(import: &RunningImport, filter: pb::ListJobsRequest) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(
            import,
            pb::ListJobsRequest {
                page_token: token,
                ..filter.clone()
            },
        )
        .await
        .unwrap();
        pages.push(page.jobs.iter().map(|job| job.job_id.clone()).collect());
        if page.next_page_token.is_empty() {
            return pages;
        }
        token = page.next_page_token;
    }
}

/// The ids of [`JOBS`] matching `keep`, newest first (the order ListJobs answers in).
fn expected(ids: &[String], keep: impl Fn(&str, Option<JobStatus>) -> bool) -> Vec<String> {
    JOBS.iter()
        .zip(ids)
        .filter(|((connection, status), _)| keep(connection, *status))
        .map(|(_, id)| id.clone())
        .rev()
        .collect()
}

#[tokio::test]
async fn pages_walk_every_job_exactly_once_newest_first() {
    let import = start("list-jobs-paging", Setup::default()).await;
    let ids = store_jobs(&import).await;

    let pages = walk(
        &import,
        pb::ListJobsRequest {
            page_size: 3,
            ..Default::default()
        },
    )
    .await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 1]);
    let walked: Vec<String> = pages.concat();
    assert_eq!(walked, expected(&ids, |_, _| true));
    assert_eq!(walked.iter().collect::<BTreeSet<_>>().len(), JOBS.len());

    // A page size that divides the count exactly ends with an empty page, not a repeat.
    let pages = walk(
        &import,
        pb::ListJobsRequest {
            page_size: 7,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(pages.concat(), expected(&ids, |_, _| true));
    assert!(
        pages.len() <= 2 && pages[1..].iter().all(Vec::is_empty),
        "{pages:?}"
    );
    import.stop().await;
}

#[tokio::test]
async fn connection_and_status_filters_narrow_the_list_and_page_too() {
    let import = start("list-jobs-filters", Setup::default()).await;
    let ids = store_jobs(&import).await;
    let completed = pb::JobStatus::Completed as i32;
    let cases = [
        (
            pb::ListJobsRequest {
                connection_id: "c-a".into(),
                ..Default::default()
            },
            expected(&ids, |c, _| c == "c-a"),
        ),
        (
            pb::ListJobsRequest {
                status: completed,
                ..Default::default()
            },
            expected(&ids, |_, s| s == Some(JobStatus::Completed)),
        ),
        (
            pb::ListJobsRequest {
                connection_id: "c-b".into(),
                status: pb::JobStatus::Queued as i32,
                ..Default::default()
            },
            expected(&ids, |c, s| c == "c-b" && s.is_none()),
        ),
        (
            pb::ListJobsRequest {
                connection_id: "c-nobody".into(),
                ..Default::default()
            },
            Vec::new(),
        ),
    ];
    for (filter, wanted) in cases {
        // One job a page: the filter holds on every page, not only the first.
        let paged = pb::ListJobsRequest {
            page_size: 1,
            ..filter.clone()
        };
        assert_eq!(walk(&import, paged).await.concat(), wanted, "{filter:?}");
        assert_eq!(
            walk(&import, filter.clone()).await.concat(),
            wanted,
            "{filter:?}"
        );
    }

    let failed = list(
        &import,
        pb::ListJobsRequest {
            status: pb::JobStatus::Failed as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(failed.jobs.len(), 1);
    assert_eq!(failed.jobs[0].failure_reason, "it broke");
    assert_eq!(failed.jobs[0].connection_id, "c-a");
    import.stop().await;
}

#[tokio::test]
async fn a_bad_page_token_or_status_is_refused_naming_the_field() {
    let import = start("list-jobs-invalid", Setup::default()).await;
    let cases = [
        ("garbage", 0, "page_token:"),
        (
            "not-a-time|0193a0c4-6d1e-7cc0-8000-0000000000bb",
            0,
            "page_token:",
        ),
        ("2025-01-01T00:00:00.000000Z|not-a-uuid", 0, "page_token:"),
        ("", 99, "status:"),
    ];
    for (page_token, status, field) in cases {
        let refused = list(
            &import,
            pb::ListJobsRequest {
                page_token: page_token.into(),
                status,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().starts_with(field),
            "expected {field:?}, got {:?}",
            refused.message()
        );
    }
    import.stop().await;
}
