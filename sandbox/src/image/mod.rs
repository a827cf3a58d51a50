//! The image store (default `/var/lib/sandbox`, `--store` or `$SANDBOX_STORE`):
//! content-addressed, each layer unpacked once and shared read-only.
//!
//! ```text
//! <root>/                          0700: nothing below is reachable by host users
//!   layers/<sha256 of the blob>/   an unpacked layer (overlay lower)
//!   blobs/sha256/<hex>             compressed layer blobs, configurations, manifests
//!                                  (kept for export and push)
//!   downloads/<hex>.partial        layer downloads a stopped pull resumes
//!   images/<sha256 of NAME:TAG>.json   an image: name, tag, manifest, config, layers
//!   users/<same key>/<container id>    containers using the image (their state folder)
//! ```
//!
//! Import reads an OCI image layout (directory or tar): index.json -> manifest ->
//! config and layers. Every blob is checked against its descriptor's size and
//! digest (layers while they are unpacked: the bytes checked are the bytes used),
//! and a layer's uncompressed content against the config's `diff_ids`. Layers are
//! unpacked by [`unpack`]'s fd-relative writer, never through a symlink; whiteouts
//! (`.wh.NAME`, `.wh..wh..opq`) become overlay whiteouts (0/0 character devices)
//! and opaque directories (`trusted.overlay.opaque=y`). Image names are checked
//! against the distribution grammar ([`Reference`]) and never name a path.
//!
//! [`pull`] fetches images from registries into the same store, [`commit`] turns
//! a container's upper layer back into a layer, [`export`] writes layouts and
//! pushes, [`usage`] accounts for disk and prunes.

pub mod commit;
pub mod export;
pub mod pull;
mod reference;
pub mod store;
mod unpack;
pub mod usage;

pub use commit::{Change, CommitOptions, container_upper};
pub use export::Pushed;
pub use pull::{Phase, Platform, Progress, PullOptions, Pulled, Quiet, RegistryOptions};
pub use reference::Reference;
pub use store::{
    DEFAULT_STORE_ROOT, Image, STORE_MODE, STORE_ROOT_ENV, Store, parse_ref, store_root, verify,
};
pub use unpack::{Limits, MAX_HEADER_BYTES};
