//! The asset pipeline: fingerprints and precompresses `static/` and Turbo's npm build into
//! `OUT_DIR`, and generates the manifest `src/assets.rs` includes. Installs the npm packages
//! first (`npm ci`) when they are missing, so a fresh clone builds with `cargo` alone.

use std::{
    env,
    fmt::Write as _,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use sha2::{Digest, Sha256};

/// Files served from node_modules, by the logical name templates use.
const VENDORED: &[(&str, &str)] = &[(
    "turbo.js",
    "node_modules/@hotwired/turbo-rails/app/assets/javascripts/turbo.js",
)];

fn main() {
    println!("cargo:rerun-if-changed=static");
    println!("cargo:rerun-if-changed=package-lock.json");
    // sqlx::migrate! embeds migrations/ at compile time; a new file must trigger a rebuild.
    println!("cargo:rerun-if-changed=migrations");
    for (_, path) in VENDORED {
        println!("cargo:rerun-if-changed={path}");
    }
    if VENDORED.iter().any(|(_, path)| !Path::new(path).exists()) {
        install_npm_packages();
    }

    let mut files: Vec<(String, PathBuf)> = fs::read_dir("static")
        .expect("static/ is readable")
        .map(|entry| entry.expect("static/ entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                path,
            )
        })
        .collect();
    files.extend(
        VENDORED
            .iter()
            .map(|(name, path)| (name.to_string(), PathBuf::from(path))),
    );
    files.sort();

    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("assets");
    fs::create_dir_all(&out).unwrap();
    let mut manifest = String::from("pub static ASSETS: &[Asset] = &[\n");
    for (logical, path) in &files {
        let bytes =
            fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let digest = hex(&Sha256::digest(&bytes));
        let (stem, ext) = logical.rsplit_once('.').unwrap_or((logical, ""));
        let served = format!("{stem}-{}.{ext}", &digest[..12]);
        fs::write(out.join(&served), &bytes).unwrap();
        fs::write(out.join(format!("{served}.gz")), gzip(&bytes)).unwrap();
        fs::write(out.join(format!("{served}.br")), brotli(&bytes)).unwrap();
        let file = |suffix: &str| {
            format!("include_bytes!(concat!(env!(\"OUT_DIR\"), \"/assets/{served}{suffix}\"))")
        };
        writeln!(
            manifest,
            "    Asset {{ logical: {logical:?}, path: \"/assets/{served}\", content_type: {:?}, \
             identity: Encoded {{ bytes: {}, etag: \"\\\"{tag}\\\"\" }}, \
             gzip: Encoded {{ bytes: {}, etag: \"\\\"{tag}-gzip\\\"\" }}, \
             brotli: Encoded {{ bytes: {}, etag: \"\\\"{tag}-br\\\"\" }} }},",
            content_type(ext),
            file(""),
            file(".gz"),
            file(".br"),
            tag = &digest[..32],
        )
        .unwrap();
    }
    manifest.push_str("];\n");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::write(out_dir.join("assets.rs"), manifest).unwrap();
    fs::write(out_dir.join("templates.rs"), templates_manifest()).unwrap();
}

/// Every file under templates/, embedded by name (`tasks/_task.html`), so the binary runs from
/// any directory and a missing template is a build error, not a runtime one.
fn templates_manifest() -> String {
    println!("cargo:rerun-if-changed=templates");
    let root = env::current_dir().unwrap().join("templates");
    let mut names = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("templates/ is readable") {
            let path = entry.unwrap().path();
            if path.is_dir() {
                println!("cargo:rerun-if-changed={}", path.display());
                dirs.push(path);
            } else {
                let name = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                names.push((name, path));
            }
        }
    }
    names.sort();
    let mut out = String::from("pub static TEMPLATES: &[(&str, &str)] = &[\n");
    for (name, path) in names {
        writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    out
}

fn install_npm_packages() {
    let status = Command::new("npm")
        .args(["ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund"])
        .status()
        .unwrap_or_else(|e| panic!("the npm packages are missing and npm could not run ({e}): install Node.js and npm, then run `npm ci`"));
    assert!(status.success(), "`npm ci` failed: see its output above");
}

fn content_type(ext: &str) -> &'static str {
    match ext {
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn brotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams {
        quality: 11,
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &bytes[..], &mut out, &params).unwrap();
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
