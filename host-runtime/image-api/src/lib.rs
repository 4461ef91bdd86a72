//! vessel's image archive API (`vessel.image.v1.ImageArchive`): import and
//! export of image archives through a running vesseld, beside the CRI
//! ImageService on the same socket.

#![allow(missing_docs)] // generated code

/// The generated messages, client and server.
pub mod v1 {
    tonic::include_proto!("vessel.image.v1");
}
