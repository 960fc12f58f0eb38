//! How overlayfs marks, in an upper folder, what it hides of the layers
//! below: a removed path is a 0/0 character device (a whiteout), a
//! replaced folder carries an opaque mark. kiln mounts every overlay with
//! `userxattr` (confined stages, in a user namespace, may not write
//! `trusted.*`), so the mark is a `user.overlay.*` attribute. Baking turns
//! the marks into OCI whiteouts; unpacking a layer to serve as a lower
//! turns OCI whiteouts back into marks.

/// The attribute of an opaque folder, set to `y`.
pub const OPAQUE: &str = "user.overlay.opaque";

/// Attributes that are overlayfs's bookkeeping, never an image's content.
pub fn is_bookkeeping(name: &[u8]) -> bool {
    name.starts_with(b"user.overlay.") || name.starts_with(b"trusted.overlay.")
}
