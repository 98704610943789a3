//! A stand-in for audit-svc in producer tests: the test writes only `Record`; every other
//! `AuditService` RPC answers UNIMPLEMENTED. (The generated servers have no default
//! handlers, so a real service that misses an RPC fails to compile; a stand-in says here,
//! once, that it serves only `Record`.)

use proto::audit::v1::audit_service_server::{AuditService, AuditServiceServer};
use proto::audit::v1::{
    ExportChunk, ExportRequest, QueryRequest, QueryResponse, RecordRequest, RecordResponse,
    VerifyRequest, VerifyResponse, WatchRequest,
};
use proto::common::v1::AuditEvent;
use tonic::{Request, Response, Status};

/// What a stand-in does with a `Record` call.
#[tonic::async_trait]
pub trait RecordHandler: Send + Sync + 'static {
    async fn record(
        &self,
        request: Request<RecordRequest>,
    ) -> Result<Response<RecordResponse>, Status>;
}

/// An `AuditService` that hands `Record` to `handler` and refuses everything else.
pub fn audit_stand_in<H: RecordHandler>(handler: H) -> AuditServiceServer<RecordOnly<H>> {
    AuditServiceServer::new(RecordOnly(handler))
}

/// See [`audit_stand_in`].
pub struct RecordOnly<H>(H);

fn only_record(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "this audit-svc stand-in serves only Record, not {rpc}"
    ))
}

type Never<T> = tokio_stream::Empty<Result<T, Status>>;

#[tonic::async_trait]
impl<H: RecordHandler> AuditService for RecordOnly<H> {
    type WatchStream = Never<AuditEvent>;
    type ExportStream = Never<ExportChunk>;

    async fn record(
        &self,
        request: Request<RecordRequest>,
    ) -> Result<Response<RecordResponse>, Status> {
        self.0.record(request).await
    }

    async fn query(&self, _: Request<QueryRequest>) -> Result<Response<QueryResponse>, Status> {
        Err(only_record("Query"))
    }

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(only_record("Watch"))
    }

    async fn verify(&self, _: Request<VerifyRequest>) -> Result<Response<VerifyResponse>, Status> {
        Err(only_record("Verify"))
    }

    async fn export(
        &self,
        _: Request<ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        Err(only_record("Export"))
    }
}
