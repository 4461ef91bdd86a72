//! `Processes` and `Stdio` services: execs, and the stdio streams of containers and execs.

use std::pin::Pin;

use futures_util::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::container::stdio::{terminal_size, OutputKind, OutputReader};
use crate::container::{Engine, ExecSpec, ExitInfo};
use crate::proto::processes_server::Processes;
use crate::proto::stdio_server::Stdio;
use crate::proto::{
    CloseStdinRequest, CloseStdinResponse, DeleteProcessRequest, DeleteProcessResponse,
    ExecProcessRequest, ExecProcessResponse, InputChunk, InputResponse, OutputChunk, OutputRequest,
    ResizeRequest, ResizeResponse, SignalProcessRequest, SignalProcessResponse, StdioStream,
    WaitProcessRequest, WaitProcessResponse,
};

/// Largest `InputChunk.data` accepted.
pub const MAX_INPUT_CHUNK: usize = 1 << 20;

/// Serves `Processes` from an engine.
#[derive(Clone, Debug)]
pub struct ProcessesService {
    engine: Engine,
}

impl ProcessesService {
    /// Serves the execs of `engine`'s containers.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

fn wait_response(exit: ExitInfo) -> WaitProcessResponse {
    WaitProcessResponse {
        exit_code: exit.exit_code,
        signal: u32::try_from(exit.signal).unwrap_or(0),
        started_at: exit.started_at,
        finished_at: exit.finished_at,
    }
}

#[tonic::async_trait]
impl Processes for ProcessesService {
    async fn exec(
        &self,
        request: Request<ExecProcessRequest>,
    ) -> Result<Response<ExecProcessResponse>, Status> {
        let req = request.get_ref();
        let spec = ExecSpec::from_request(req).inspect_err(|err| {
            tracing::warn!(container_id = %req.container_id, exec_id = %req.exec_id, error = %err, "exec rejected");
        })?;
        let pid = self.engine.exec(spec).await?;
        Ok(Response::new(ExecProcessResponse { pid }))
    }

    async fn wait(
        &self,
        request: Request<WaitProcessRequest>,
    ) -> Result<Response<WaitProcessResponse>, Status> {
        let req = request.get_ref();
        let exit = self
            .engine
            .wait_process(&req.container_id, &req.exec_id)
            .await?;
        Ok(Response::new(wait_response(exit)))
    }

    async fn signal(
        &self,
        request: Request<SignalProcessRequest>,
    ) -> Result<Response<SignalProcessResponse>, Status> {
        let req = request.get_ref();
        self.engine
            .signal_process(&req.container_id, &req.exec_id, req.signal)?;
        Ok(Response::new(SignalProcessResponse {}))
    }

    async fn delete(
        &self,
        request: Request<DeleteProcessRequest>,
    ) -> Result<Response<DeleteProcessResponse>, Status> {
        let req = request.get_ref();
        self.engine
            .delete_process(&req.container_id, &req.exec_id)
            .await?;
        Ok(Response::new(DeleteProcessResponse {}))
    }
}

/// Serves `Stdio` from an engine.
#[derive(Clone, Debug)]
pub struct StdioService {
    engine: Engine,
}

impl StdioService {
    /// Serves the streams of `engine`'s containers and execs.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

/// The chunks of one output until EOF; dropping it (the host went away) detaches.
type ChunkStream = Pin<Box<dyn Stream<Item = Result<OutputChunk, Status>> + Send>>;

fn chunks(reader: Option<OutputReader>) -> ChunkStream {
    // Reads happen only as tonic polls for the next message, which it does only
    // while HTTP/2 flow control lets it send: a slow host slows the process.
    Box::pin(futures_util::stream::unfold(reader, |reader| async move {
        let mut reader = reader?;
        match reader.next_chunk().await {
            Ok(Some(data)) => Some((Ok(OutputChunk { data }), Some(reader))),
            Ok(None) => None,
            Err(e) => Some((Err(Status::internal(format!("read output: {e}"))), None)),
        }
    }))
}

#[tonic::async_trait]
impl Stdio for StdioService {
    type OutputStream = ChunkStream;

    async fn output(
        &self,
        request: Request<OutputRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let req = request.get_ref();
        let kind = match StdioStream::try_from(req.stream) {
            Ok(StdioStream::Stdout) => OutputKind::Stdout,
            Ok(StdioStream::Stderr) => OutputKind::Stderr,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "stream {} is not STDOUT or STDERR",
                    req.stream
                )))
            }
        };
        let stdio = self.engine.process_stdio(&req.container_id, &req.exec_id)?;
        let reader = stdio.output(kind)?;
        Ok(Response::new(chunks(reader)))
    }

    async fn input(
        &self,
        request: Request<Streaming<InputChunk>>,
    ) -> Result<Response<InputResponse>, Status> {
        let mut stream = request.into_inner();
        let Some(mut chunk) = stream.message().await? else {
            return Err(Status::invalid_argument(
                "Input ended before its first message",
            ));
        };
        let stdio = self
            .engine
            .process_stdio(&chunk.container_id, &chunk.exec_id)?;
        let writer = stdio.input()?;
        let keep_open = chunk.keep_open;
        let mut written = 0u64;
        loop {
            if chunk.data.len() > MAX_INPUT_CHUNK {
                return Err(Status::invalid_argument(format!(
                    "InputChunk.data is longer than {MAX_INPUT_CHUNK} bytes"
                )));
            }
            writer.write_all(&chunk.data).await?;
            written += chunk.data.len() as u64;
            if chunk.close {
                writer.close();
                break;
            }
            // A broken call (the host went away) hands stdin back open, for the next Input.
            match stream.message().await? {
                Some(next) => chunk = next,
                None => {
                    if !keep_open {
                        writer.close();
                    }
                    break;
                }
            }
        }
        Ok(Response::new(InputResponse { written }))
    }

    async fn close_stdin(
        &self,
        request: Request<CloseStdinRequest>,
    ) -> Result<Response<CloseStdinResponse>, Status> {
        let req = request.get_ref();
        self.engine
            .process_stdio(&req.container_id, &req.exec_id)?
            .close_stdin()?;
        Ok(Response::new(CloseStdinResponse {}))
    }

    async fn resize(
        &self,
        request: Request<ResizeRequest>,
    ) -> Result<Response<ResizeResponse>, Status> {
        let req = request.get_ref();
        let size = req.size.unwrap_or_default();
        let (rows, cols) = terminal_size(size.rows, size.cols, "size")?;
        self.engine
            .process_stdio(&req.container_id, &req.exec_id)?
            .resize(rows, cols)?;
        Ok(Response::new(ResizeResponse {}))
    }
}
