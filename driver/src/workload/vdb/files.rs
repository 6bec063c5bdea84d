//! Vector files: the formats ANN benchmarks ship, read into a [`Matrix`],
//! and the ground-truth cache kept next to a data set.
//!
//! * `.fvecs` / `.bvecs` (the TEXMEX sets): per vector an i32 dimension,
//!   then that many f32 (`fvecs`) or u8 (`bvecs`) values.
//! * DiskANN `.bin` / `.fbin` (f32) and `.u8bin` (u8): a u32 row count, a
//!   u32 dimension, then the rows.
//!
//! The ground-truth cache is DiskANN's truth-set format (u32 queries, u32
//! k, the ids as u32, then the distances as f32), named after a hash of
//! the base vectors, the queries and k; a cached file is checked on load
//! (size, ids in range, and a few queries recomputed exactly).

use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use super::data::{Matrix, l2_sq};
use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Fvecs,
    Bvecs,
    BinF32,
    BinU8,
}

fn format_of(path: &Path) -> Result<Format, Error> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let ext = name.rsplit('.').next().unwrap_or("");
    match ext {
        "fvecs" => Ok(Format::Fvecs),
        "bvecs" => Ok(Format::Bvecs),
        "bin" | "fbin" => Ok(Format::BinF32),
        "u8bin" => Ok(Format::BinU8),
        _ => Err(Error::usage(format!(
            "{}: unknown vector file type '.{ext}'; use .fvecs, .bvecs, .fbin/.bin (DiskANN f32) or .u8bin",
            path.display()
        ))),
    }
}

/// Reads the first `rows` vectors (all when `None`) of `path`, which must
/// have `dim` coordinates when `dim` is given.
pub fn load(path: &Path, rows: Option<usize>, dim: Option<usize>) -> Result<Matrix, Error> {
    let format = format_of(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::usage(format!("{}: cannot read: {e}", path.display())))?;
    let bad = |what: String| Error::usage(format!("{}: {what}", path.display()));
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let (file_rows, file_dim, header, elem, per_row_prefix) = match format {
        Format::BinF32 | Format::BinU8 => {
            if bytes.len() < 8 {
                return Err(bad(format!("{} bytes: too short for the 8-byte header (rows, dim)", bytes.len())));
            }
            let elem = if format == Format::BinF32 { 4 } else { 1 };
            let (n, d) = (u32_at(0) as usize, u32_at(4) as usize);
            if d == 0 {
                return Err(bad("the header says dimension 0".into()));
            }
            let want = 8 + n as u128 * d as u128 * elem as u128;
            if want != bytes.len() as u128 {
                return Err(bad(format!(
                    "the header says {n} × {d} vectors ({want} bytes) but the file has {} bytes (truncated or not this format)",
                    bytes.len()
                )));
            }
            (n, d, 8, elem, 0)
        }
        Format::Fvecs | Format::Bvecs => {
            if bytes.len() < 4 {
                return Err(bad(format!("{} bytes: too short for a vector's dimension", bytes.len())));
            }
            let elem = if format == Format::Fvecs { 4 } else { 1 };
            let d = u32_at(0) as usize;
            if d == 0 || d > 1 << 20 {
                return Err(bad(format!("the first vector's dimension is {d}")));
            }
            let row = 4 + d * elem;
            if !bytes.len().is_multiple_of(row) {
                return Err(bad(format!(
                    "{} bytes is not a whole number of {d}-dimensional vectors ({row} bytes each): truncated?",
                    bytes.len()
                )));
            }
            (bytes.len() / row, d, 0, elem, 4)
        }
    };
    if let Some(d) = dim
        && d != file_dim
    {
        return Err(bad(format!("vectors have {file_dim} dimensions but dim is {d}: set dim={file_dim}")));
    }
    let n = rows.unwrap_or(file_rows);
    if n > file_rows {
        return Err(bad(format!("holds {file_rows} vectors, fewer than the {n} asked for")));
    }
    let row_bytes = per_row_prefix + file_dim * elem;
    let mut data = Vec::with_capacity(n * file_dim);
    for i in 0..n {
        let at = header + i * row_bytes;
        if per_row_prefix > 0 && u32_at(at) as usize != file_dim {
            return Err(bad(format!("vector {i} has dimension {}, the first has {file_dim}", u32_at(at))));
        }
        let body = &bytes[at + per_row_prefix..at + row_bytes];
        if elem == 4 {
            data.extend(body.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))));
        } else {
            data.extend(body.iter().map(|&b| f32::from(b)));
        }
    }
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        return Err(bad(format!("vector {} has a non-finite value", i / file_dim)));
    }
    Ok(Matrix { dim: file_dim, data })
}

/// L2-normalises every row (cosine data); zero rows stay zero.
pub fn normalise_rows(m: &mut Matrix) {
    let dim = m.dim;
    for row in m.data.chunks_exact_mut(dim) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }
}

/// The cache key: base vectors, queries and k (as searched).
pub fn truth_key(base: &Matrix, queries: &Matrix, k: usize) -> u64 {
    let mut h = Xxh3::new();
    for m in [base, queries] {
        h.update(&(m.rows() as u64).to_le_bytes());
        h.update(&(m.dim as u64).to_le_bytes());
        for x in &m.data {
            h.update(&x.to_bits().to_le_bytes());
        }
    }
    h.update(&(k as u64).to_le_bytes());
    h.digest()
}

/// Where the cached ground truth of `base_file` for `key` lives.
pub fn truth_path(base_file: &Path, k: usize, key: u64) -> PathBuf {
    let stem = base_file.file_name().and_then(|n| n.to_str()).unwrap_or("vectors");
    base_file.with_file_name(format!("{stem}.gt{k}.{key:016x}.bin"))
}

/// Writes the truth set (ids and exact distances) in DiskANN's format.
pub fn write_truth(path: &Path, base: &Matrix, queries: &Matrix, truth: &[Vec<u32>], k: usize) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(8 + truth.len() * k * 8);
    out.extend_from_slice(&(truth.len() as u32).to_le_bytes());
    out.extend_from_slice(&(k as u32).to_le_bytes());
    for ids in truth {
        ids.iter().for_each(|id| out.extend_from_slice(&id.to_le_bytes()));
    }
    for (q, ids) in truth.iter().enumerate() {
        for &id in ids {
            out.extend_from_slice(&l2_sq(queries.row(q), base.row(id as usize)).to_le_bytes());
        }
    }
    // Written whole under a temporary name, then renamed: a reader never
    // sees half a file.
    let tmp = path.with_extension("bin.tmp");
    std::fs::write(&tmp, &out)?;
    std::fs::rename(&tmp, path)
}

/// Reads a cached truth set and checks it against the data: `Ok(None)`
/// when there is no cache file, an error naming the file when it is wrong.
pub fn read_truth(path: &Path, base: &Matrix, queries: &Matrix, k: usize) -> Result<Option<Vec<Vec<u32>>>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::usage(format!("{}: cannot read the cached ground truth: {e}", path.display()))),
    };
    let bad = |what: &str| {
        Error::usage(format!("{}: cached ground truth {what}; delete the file to recompute it", path.display()))
    };
    let nq = queries.rows();
    if bytes.len() != 8 + nq * k * 8 {
        return Err(bad("has the wrong size"));
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    if u32_at(0) as usize != nq || u32_at(4) as usize != k {
        return Err(bad("is for another query set or k"));
    }
    let truth: Vec<Vec<u32>> = (0..nq).map(|q| (0..k).map(|j| u32_at(8 + (q * k + j) * 4)).collect()).collect();
    if truth.iter().flatten().any(|&id| id as usize >= base.rows()) {
        return Err(bad("names vectors past the end of the base set"));
    }
    // Spot check: a few queries' exact top-k recomputed must match.
    for q in [0, nq / 2, nq - 1] {
        let want = super::data::ground_truth(base, &row_matrix(queries, q), k, 1);
        if want[0] != truth[q] {
            return Err(bad(&format!("does not match the data (query {q} differs)")));
        }
    }
    Ok(Some(truth))
}

fn row_matrix(m: &Matrix, i: usize) -> Matrix {
    Matrix { dim: m.dim, data: m.row(i).to_vec() }
}

#[cfg(test)]
mod tests {
    use super::super::data::{base_vectors, ground_truth, queries};
    use super::*;

    fn write_fbin(path: &Path, m: &Matrix) {
        let mut out = Vec::new();
        out.extend_from_slice(&(m.rows() as u32).to_le_bytes());
        out.extend_from_slice(&(m.dim as u32).to_le_bytes());
        m.data.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        std::fs::write(path, out).unwrap();
    }

    fn msg(r: Result<Matrix, Error>) -> String {
        match r {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn every_format_loads_the_same_vectors() {
        let d = tempfile::tempdir().unwrap();
        let m = Matrix { dim: 3, data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] };
        write_fbin(&d.path().join("a.fbin"), &m);
        let mut fv = Vec::new();
        let mut bv = Vec::new();
        let mut u8bin = vec![2, 0, 0, 0, 3, 0, 0, 0];
        for row in m.data.chunks(3) {
            fv.extend_from_slice(&3i32.to_le_bytes());
            bv.extend_from_slice(&3i32.to_le_bytes());
            row.iter().for_each(|x| fv.extend_from_slice(&x.to_le_bytes()));
            row.iter().for_each(|&x| bv.push(x as u8));
            row.iter().for_each(|&x| u8bin.push(x as u8));
        }
        std::fs::write(d.path().join("a.fvecs"), &fv).unwrap();
        std::fs::write(d.path().join("a.bvecs"), &bv).unwrap();
        std::fs::write(d.path().join("a.u8bin"), &u8bin).unwrap();
        for name in ["a.fbin", "a.fvecs", "a.bvecs", "a.u8bin"] {
            assert_eq!(load(&d.path().join(name), None, Some(3)).unwrap(), m, "{name}");
        }
        // The first rows only.
        assert_eq!(load(&d.path().join("a.fvecs"), Some(1), None).unwrap().data, vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn bad_files_name_the_file_and_the_problem() {
        let d = tempfile::tempdir().unwrap();
        let m = Matrix { dim: 4, data: vec![0.5; 40] };
        let p = d.path().join("base.fbin");
        write_fbin(&p, &m);
        let full = std::fs::read(&p).unwrap();
        std::fs::write(&p, &full[..full.len() - 3]).unwrap();
        let e = msg(load(&p, None, None));
        assert!(e.contains("base.fbin") && e.contains("truncated"), "{e}");
        std::fs::write(&p, &full).unwrap();
        assert!(msg(load(&p, None, Some(8))).contains("set dim=4"));
        assert!(msg(load(&p, Some(11), None)).contains("holds 10 vectors"));
        let f = d.path().join("q.fvecs");
        std::fs::write(&f, [4, 0, 0, 0, 0, 0, 128, 63, 0]).unwrap();
        assert!(msg(load(&f, None, None)).contains("not a whole number"));
        assert!(msg(load(&d.path().join("x.npy"), None, None)).contains("unknown vector file type"));
        assert!(msg(load(&d.path().join("missing.fbin"), None, None)).contains("cannot read"));
    }

    #[test]
    fn the_truth_cache_round_trips_and_rejects_other_data() {
        let d = tempfile::tempdir().unwrap();
        let base = base_vectors(1, 500, 8, true);
        let q = queries(1, &base, 20, true, 0.05, true);
        let truth = ground_truth(&base, &q, 10, 2);
        let key = truth_key(&base, &q, 10);
        let path = truth_path(&d.path().join("base.fbin"), 10, key);
        assert!(read_truth(&path, &base, &q, 10).unwrap().is_none());
        write_truth(&path, &base, &q, &truth, 10).unwrap();
        assert_eq!(read_truth(&path, &base, &q, 10).unwrap(), Some(truth));
        // Other data or k: another key, and the file itself fails its check.
        let other = base_vectors(2, 500, 8, true);
        assert_ne!(truth_key(&other, &q, 10), key);
        assert_ne!(truth_key(&base, &q, 5), key);
        let e = read_truth(&path, &other, &q, 10).unwrap_err().to_string();
        assert!(e.contains("does not match the data") && e.contains("delete the file"), "{e}");
    }
}
