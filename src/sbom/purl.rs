//! Package URLs (`pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`), as the
//! purl spec writes them: every character but letters, digits and
//! `.-_~` percent-encoded in names and versions (`g++` is `g%2B%2B`),
//! with `:` kept in versions (Debian epochs).

fn encode(text: &str, keep: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric()
            || b".-_~".contains(&byte)
            || keep.as_bytes().contains(&byte)
        {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The purl of a distribution package; `distro` as `debian-12`.
pub fn purl(
    kind: &str,
    namespace: &str,
    name: &str,
    version: &str,
    arch: &str,
    distro: Option<String>,
) -> String {
    let mut purl = format!(
        "pkg:{kind}/{}/{}@{}",
        encode(&namespace.to_ascii_lowercase(), ""),
        encode(name, ""),
        encode(version, ":")
    );
    let mut qualifiers = Vec::new();
    if !arch.is_empty() {
        qualifiers.push(format!("arch={}", encode(arch, "")));
    }
    if let Some(distro) = distro {
        qualifiers.push(format!("distro={}", encode(&distro, "")));
    }
    if !qualifiers.is_empty() {
        purl.push('?');
        purl.push_str(&qualifiers.join("&"));
    }
    purl
}
