//! Cross-service integration tests, one binary (links once).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod app_budget;
mod audit_delivery;
mod binaries;
mod browser;
mod clioctl;
mod compliance_reports;
mod dashboard;
mod denials;
mod fair_scheduling;
mod foundation;
mod hostile_data;
mod import_jobs;
mod import_results;
mod job_access;
mod job_slots;
mod metrics;
mod oidc_provider;
mod outages;
mod page_writes;
mod process;
mod python_producer;
mod reflection;
mod service_processes;
mod services;
mod stack;
mod suggestions;
mod sync_integrity;
mod tls;
mod tls_everywhere;
mod traces;
mod webhooks;
