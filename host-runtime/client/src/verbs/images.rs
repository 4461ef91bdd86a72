//! Image verbs: `images`, `pull`, `rmi`, `inspecti`.

use std::io::Write;

use k8s_cri::v1::{
    AuthConfig, Image, ImageFilter, ImageSpec, ImageStatusRequest, ImageStatusResponse,
    ListImagesRequest, PodSandboxConfig, PullImageRequest, RemoveImageRequest,
};
use serde_json::{json, Value};

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
