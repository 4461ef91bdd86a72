//! Image verbs: `images`, `pull`, `rmi`, `inspecti`, `imagefsinfo`, and
//! vesseld's own `image import` and `image export`.

use std::io::Write;

use k8s_cri::v1::{
    AuthConfig, FilesystemUsage, Image, ImageFilter, ImageFsInfoRequest, ImageSpec,
    ImageStatusRequest, ImageStatusResponse, ListImagesRequest, PodSandboxConfig, PullImageRequest,
    RemoveImageRequest,
};
use serde_json::{json, Value};
use vessel_image_api::v1::{ExportRequest, ImportRequest};

use super::{emit, emit_value, Deadlines, Format};
use crate::connect::{call, request, Cri};
use crate::error::ClientError;
use crate::output::{json, table};

/// What `images` lists and how.
#[derive(Debug, Clone, Default)]
pub struct ImagesOptions {
    /// Only this image (reference).
    pub image: Option<String>,
    /// Print only image IDs.
    pub quiet: bool,
    /// Output format.
    pub output: Format,
    /// Print full image IDs in the table.
    pub no_trunc: bool,
}

/// What `pull` sends.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Registry credentials `USER[:PASSWORD]`.
    pub creds: Option<String>,
    /// Registry auth string (base64 `USER:PASSWORD`).
    pub auth: Option<String>,
}

/// The AuthConfig for crictl's `--creds USER[:PASSWORD]` or `--auth BASE64`.
pub(super) fn auth_config(
    creds: Option<&str>,
    auth: Option<&str>,
) -> Result<Option<AuthConfig>, ClientError> {
    match (creds, auth) {
        (Some(_), Some(_)) => Err(ClientError::Usage(
            "--creds and --auth cannot both be given".into(),
        )),
        (Some(creds), None) => {
            let (username, password) = creds.split_once(':').unwrap_or((creds, ""));
            if username.is_empty() {
                return Err(ClientError::Usage(
                    "--creds: the user name is empty (USER[:PASSWORD])".into(),
                ));
            }
            Ok(Some(AuthConfig {
                username: username.to_string(),
                password: password.to_string(),
                ..Default::default()
            }))
        }
        (None, Some(auth)) => Ok(Some(AuthConfig {
            auth: auth.to_string(),
            ..Default::default()
        })),
        (None, None) => Ok(None),
    }
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

/// PullImage; returns the runtime's image reference.
pub(super) async fn pull_image(
    cri: &mut Cri,
    image: &str,
    auth: Option<AuthConfig>,
    sandbox_config: Option<PodSandboxConfig>,
    deadlines: Deadlines,
) -> Result<String, ClientError> {
    let reply = call(
        "PullImage",
        deadlines.long,
        cri.image.pull_image(request(
            PullImageRequest {
                image: spec(image),
                auth,
                sandbox_config,
            },
            deadlines.long,
        )),
    )
    .await?;
    Ok(reply.image_ref)
}

/// ImageStatus of a reference or ID.
pub(super) async fn image_status(
    cri: &mut Cri,
    image: &str,
    verbose: bool,
    deadlines: Deadlines,
) -> Result<ImageStatusResponse, ClientError> {
    call(
        "ImageStatus",
        deadlines.quick,
        cri.image.image_status(request(
            ImageStatusRequest {
                image: spec(image),
                verbose,
            },
            deadlines.quick,
        )),
    )
    .await
}

/// `pull`: pulls an image; prints crictl's "Image is up to date for REF".
pub async fn pull(
    cri: &mut Cri,
    image: &str,
    o: &PullOptions,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<String, ClientError> {
    let auth = auth_config(o.creds.as_deref(), o.auth.as_deref())?;
    let image_ref = pull_image(cri, image, auth, None, deadlines).await?;
    emit(out, &format!("Image is up to date for {image_ref}\n"))?;
    Ok(image_ref)
}

async fn list_images(
    cri: &mut Cri,
    image: Option<&str>,
    deadlines: Deadlines,
) -> Result<Vec<Image>, ClientError> {
    let filter = image.map(|i| ImageFilter { image: spec(i) });
    Ok(call(
        "ListImages",
        deadlines.quick,
        cri.image
            .list_images(request(ListImagesRequest { filter }, deadlines.quick)),
    )
    .await?
    .images)
}

/// `images`: lists images.
pub async fn images(
    cri: &mut Cri,
    o: &ImagesOptions,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let items = list_images(cri, o.image.as_deref(), deadlines).await?;
    if o.quiet {
        return emit(
            out,
            &items
                .iter()
                .map(|i| format!("{}\n", i.id))
                .collect::<String>(),
        );
    }
    if o.output != Format::Table {
        let doc = json!({ "images": items.iter().map(json::image).collect::<Vec<_>>() });
        return emit_value(out, &doc, o.output);
    }
    let mut t = table::Table::new(&["IMAGE", "TAG", "IMAGE ID", "SIZE"]);
    for i in &items {
        let id = if o.no_trunc {
            i.id.clone()
        } else {
            table::short_id(&i.id)
        };
        let size = table::human_size(i.size);
        let mut names: Vec<(String, String)> = i
            .repo_tags
            .iter()
            .map(|r| {
                let (repo, tag) = table::split_repo_tag(r);
                (repo.to_string(), tag.to_string())
            })
            .collect();
        if names.is_empty() {
            let repo = i.repo_digests.first().map_or("<none>", |d| {
                d.split_once('@').map_or(d.as_str(), |(repo, _)| repo)
            });
            names.push((repo.to_string(), "<none>".to_string()));
        }
        for (repo, tag) in names {
            t.row(vec![repo, tag, id.clone(), size.clone()]);
        }
    }
    emit(out, &t.render())
}

/// `rmi`: removes images by reference or ID (`all`: every image); prints "Deleted: NAME".
pub async fn rmi(
    cri: &mut Cri,
    images: &[String],
    all: bool,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let targets: Vec<Image> = if all {
        list_images(cri, None, deadlines).await?
    } else {
        let mut found = Vec::new();
        for name in images {
            let status = image_status(cri, name, false, deadlines).await?;
            found.push(status.image.ok_or_else(|| ClientError::NotFound {
                kind: "image",
                id: name.clone(),
            })?);
        }
        found
    };
    for image in targets {
        call(
            "RemoveImage",
            deadlines.long,
            cri.image.remove_image(request(
                RemoveImageRequest {
                    image: spec(&image.id),
                },
                deadlines.long,
            )),
        )
        .await?;
        let names = if image.repo_tags.is_empty() {
            vec![image.id.clone()]
        } else {
            image.repo_tags.clone()
        };
        for name in names {
            emit(out, &format!("Deleted: {name}\n"))?;
        }
    }
    Ok(())
}

/// `inspecti`: crictl's status document of each image (an array if several).
pub async fn inspecti(
    cri: &mut Cri,
    images: &[String],
    format: Format,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let mut docs = Vec::new();
    for name in images {
        let reply = image_status(cri, name, true, deadlines).await?;
        let image = reply.image.as_ref().ok_or_else(|| ClientError::NotFound {
            kind: "image",
            id: name.clone(),
        })?;
        docs.push(json::status_document(json::image(image), &reply.info));
    }
    let doc = if docs.len() == 1 {
        docs.remove(0)
    } else {
        Value::Array(docs)
    };
    emit_value(out, &doc, format)
}

/// `imagefsinfo`: the image and container filesystems' usage, as crictl
/// prints it (`{"status": {"imageFilesystems": [...], ...}}`; uint64 as
/// strings, the protobuf JSON mapping).
pub async fn imagefsinfo(
    cri: &mut Cri,
    format: Format,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let reply = call(
        "ImageFsInfo",
        deadlines.quick,
        cri.image
            .image_fs_info(request(ImageFsInfoRequest {}, deadlines.quick)),
    )
    .await?;
    let usage = |list: &[FilesystemUsage]| -> Value {
        list.iter()
            .map(|u| {
                json!({
                    "timestamp": u.timestamp.to_string(),
                    "fsId": {"mountpoint": u.fs_id.as_ref().map(|f| f.mountpoint.clone()).unwrap_or_default()},
                    "usedBytes": {"value": u.used_bytes.as_ref().map(|v| v.value).unwrap_or(0).to_string()},
                    "inodesUsed": {"value": u.inodes_used.as_ref().map(|v| v.value).unwrap_or(0).to_string()},
                })
            })
            .collect()
    };
    let doc = json!({"status": {
        "imageFilesystems": usage(&reply.image_filesystems),
        "containerFilesystems": usage(&reply.container_filesystems),
    }});
    emit_value(out, &doc, format)
}

/// An absolute form of `path` (the daemon resolves it, not the client).
fn absolute(path: &std::path::Path) -> Result<String, ClientError> {
    std::path::absolute(path)
        .map(|p| p.display().to_string())
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))
}

/// `image import FILE`: vesseld imports an OCI layout (directory or tar) or
/// a `docker save` tarball; prints each image it got, as `ctr` does.
pub async fn import(
    cri: &mut Cri,
    file: &std::path::Path,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let reply = call(
        "Import",
        deadlines.long,
        cri.archive.import(request(
            ImportRequest {
                path: absolute(file)?,
            },
            deadlines.long,
        )),
    )
    .await?;
    for image in reply.images {
        emit(
            out,
            &format!("imported {} ({})\n", image.names.join(", "), image.id),
        )?;
    }
    Ok(())
}

/// `image export IMAGE FILE`: vesseld writes the image as an OCI layout tarball.
pub async fn export(
    cri: &mut Cri,
    image: &str,
    file: &std::path::Path,
    deadlines: Deadlines,
) -> Result<(), ClientError> {
    call(
        "Export",
        deadlines.long,
        cri.archive.export(request(
            ExportRequest {
                image: image.to_string(),
                path: absolute(file)?,
            },
            deadlines.long,
        )),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds_split_like_crictl() {
        let a = auth_config(Some("user:pa:ss"), None).unwrap().unwrap();
        assert_eq!(
            (a.username.as_str(), a.password.as_str()),
            ("user", "pa:ss")
        );
        let a = auth_config(Some("user"), None).unwrap().unwrap();
        assert_eq!(a.password, "");
        assert!(auth_config(Some(":x"), None).is_err());
        assert!(auth_config(Some("u:p"), Some("x")).is_err());
        assert_eq!(
            auth_config(None, Some("dTpw")).unwrap().unwrap().auth,
            "dTpw"
        );
        assert!(auth_config(None, None).unwrap().is_none());
    }
}
