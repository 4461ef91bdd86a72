//! `version` and `info`.

use std::io::Write;

use k8s_cri::v1::{StatusRequest, VersionRequest};
use serde_json::{json, Value};

use super::{emit, emit_value, Deadlines, Format};
use crate::connect::{call, request, Cri};
use crate::error::ClientError;
use crate::output::json;

/// The CRI API version the client speaks (what crictl sends).
const CLIENT_API_VERSION: &str = "v1";

/// `version`: the runtime's name and versions, as crictl prints them.
pub async fn version(
    cri: &mut Cri,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let reply = call(
        "Version",
        deadlines.quick,
        cri.runtime.version(request(
            VersionRequest {
                version: CLIENT_API_VERSION.to_string(),
            },
            deadlines.quick,
        )),
    )
    .await?;
    emit(
        out,
        &format!(
            "Version:  {}\nRuntimeName:  {}\nRuntimeVersion:  {}\nRuntimeApiVersion:  {}\n",
            reply.version, reply.runtime_name, reply.runtime_version, reply.runtime_api_version
        ),
    )
}

/// `info`: the runtime's status conditions, handlers, features and verbose info.
pub async fn info(
    cri: &mut Cri,
    format: Format,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let reply = call(
        "Status",
        deadlines.quick,
        cri.runtime
            .status(request(StatusRequest { verbose: true }, deadlines.quick)),
    )
    .await?;
    let status = reply
        .status
        .as_ref()
        .map_or(Value::Null, json::runtime_status);
    let mut doc = json::status_document(status, &reply.info);
    if let Value::Object(o) = &mut doc {
        o.insert(
            "runtimeHandlers".into(),
            Value::Array(
                reply
                    .runtime_handlers
                    .iter()
                    .map(json::runtime_handler)
                    .collect(),
            ),
        );
        if let Some(f) = &reply.features {
            o.insert(
                "features".into(),
                json!({ "supplementalGroupsPolicy": f.supplemental_groups_policy }),
            );
        }
    }
    emit_value(out, &doc, format)
}
