//! Imports: the jobs import-svc holds, newest first, each with a progress bar over its
//! resources and the records it fetched and wrote; the page reloads itself while a job is
//! queued or running.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Html;
use proto::imports::v1::{JobStatus, ListJobsRequest};
use serde::Deserialize;

use super::{Chrome, Signed, render};
use crate::AppState;
use crate::backends::IMPORT;
use crate::display;
use crate::error::PageError;

const PAGE_SIZE: u32 = 50;

pub struct JobRow {
    pub job_id: String,
    /// The Clio account the job read (its records' key), once known.
    pub account: String,
    pub connection_id: String,
    pub status: String,
    pub active: bool,
    pub resources_done: usize,
    pub resources: usize,
    pub fetched: u64,
    pub written: u64,
    pub skipped: u64,
    pub requested_by: String,
    pub created_at: String,
    pub finished_at: String,
    pub failure: String,
}

#[derive(Template)]
#[template(path = "imports.html")]
struct ImportsPage {
    chrome: Chrome,
    jobs: Vec<JobRow>,
    next: Option<String>,
    refresh: bool,
}

#[derive(Deserialize)]
pub struct ImportsQuery {
    #[serde(default)]
    page_token: String,
}

fn status(value: i32) -> String {
    JobStatus::try_from(value).map_or_else(
        |_| "unknown".into(),
        |s| {
            s.as_str_name()
                .trim_start_matches("JOB_STATUS_")
                .to_ascii_lowercase()
                .replace('_', " ")
        },
    )
}

pub async fn list(
    State(state): State<AppState>,
    signed: Signed,
    Query(query): Query<ImportsQuery>,
) -> Result<Html<String>, PageError> {
    let answer = state
        .backends
        .imports(&signed.0.person)
        .list_jobs(ListJobsRequest {
            page_size: PAGE_SIZE,
            page_token: query.page_token,
            ..ListJobsRequest::default()
        })
        .await
        .map_err(|s| PageError::from_status(IMPORT, &s))?
        .into_inner();
    let jobs: Vec<JobRow> = answer
        .jobs
        .into_iter()
        .map(|job| JobRow {
            active: job.status == JobStatus::Queued as i32
                || job.status == JobStatus::Running as i32,
            status: status(job.status),
            resources_done: job.progress.iter().filter(|p| p.done).count(),
            resources: job.resources.len().max(job.progress.len()),
            fetched: job.progress.iter().map(|p| p.records_fetched).sum(),
            written: job.progress.iter().map(|p| p.records_written).sum(),
            skipped: job.progress.iter().map(|p| p.records_skipped).sum(),
            created_at: display::when(job.created_at.as_ref()),
            finished_at: display::when(job.finished_at.as_ref()),
            failure: job.failure_reason,
            account: job.clio_account_id,
            requested_by: job.requested_by,
            connection_id: job.connection_id,
            job_id: job.job_id,
        })
        .collect();
    render(&ImportsPage {
        chrome: signed.chrome("imports"),
        refresh: jobs.iter().any(|j| j.active),
        next: Some(answer.next_page_token)
            .filter(|t| !t.is_empty())
            .map(|t| super::query_string("/imports", &[("page_token", t.as_str())])),
        jobs,
    })
}
