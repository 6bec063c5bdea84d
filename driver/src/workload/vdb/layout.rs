//! DiskANN's `_disk.index` layout (spec §3.2–3.3): sector 0 is a header (a
//! bin header `u32 rows = 9, u32 cols = 1`, then nine u64: npts, dim,
//! medoid, max_node_len, nodes_per_sector, num_frozen_pts, frozen_pt_loc,
//! has_reorder_data, file_size); then fixed-size node records (f32 vector,
//! u32 neighbour count, `R` u32 ids, unused slots zero) packed into 4 KiB
//! sectors, or spanning several sectors when a node is larger than one.

use super::data::Matrix;
use super::graph::Graph;

pub const SECTOR_BYTES: u64 = 4096;

/// Where nodes live in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub npts: u64,
    pub dim: u64,
    pub medoid: u64,
    pub max_degree: u64,
    pub node_len: u64,
    /// 0 when a node spans several sectors.
    pub nodes_per_sector: u64,
    pub file_size: u64,
}

impl Layout {
    pub fn new(npts: u64, dim: u64, max_degree: u64, medoid: u64) -> Layout {
        let node_len = dim * 4 + 4 + 4 * max_degree;
        let nodes_per_sector = SECTOR_BYTES / node_len;
        let node_sectors =
            if nodes_per_sector > 0 { npts.div_ceil(nodes_per_sector) } else { npts * node_len.div_ceil(SECTOR_BYTES) };
        Layout {
            npts,
            dim,
            medoid,
            max_degree,
            node_len,
            nodes_per_sector,
            file_size: (1 + node_sectors) * SECTOR_BYTES,
        }
    }

    /// Bytes one node read transfers (one sector, or all of a big node's).
    pub fn read_len(&self) -> u64 {
        if self.nodes_per_sector > 0 { SECTOR_BYTES } else { self.node_len.div_ceil(SECTOR_BYTES) * SECTOR_BYTES }
    }

    /// File offset of the read holding node `id`, and the node's offset
    /// inside that read.
    pub fn locate(&self, id: u64) -> (u64, usize) {
        if let Some(sector_index) = id.checked_div(self.nodes_per_sector) {
            let sector = 1 + sector_index;
            (sector * SECTOR_BYTES, ((id % self.nodes_per_sector) * self.node_len) as usize)
        } else {
            let spn = self.node_len.div_ceil(SECTOR_BYTES);
            ((1 + id * spn) * SECTOR_BYTES, 0)
        }
    }

    /// Writes the header sector.
    fn header(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&9u32.to_le_bytes());
        out[4..8].copy_from_slice(&1u32.to_le_bytes());
        let fields = [self.npts, self.dim, self.medoid, self.node_len, self.nodes_per_sector, 0, 0, 0, self.file_size];
        for (i, f) in fields.iter().enumerate() {
            out[8 + i * 8..16 + i * 8].copy_from_slice(&f.to_le_bytes());
        }
    }

    /// Reads a header sector; `None` if it is not one this build wrote.
    pub fn parse_header(sector: &[u8]) -> Option<Layout> {
        let u32_at = |o: usize| u32::from_le_bytes(sector[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(sector[8 + i * 8..16 + i * 8].try_into().expect("8 bytes"));
        if sector.len() < 80 || u32_at(0) != 9 || u32_at(4) != 1 {
            return None;
        }
        let (npts, dim, medoid, node_len) = (u64_at(0), u64_at(1), u64_at(2), u64_at(3));
        if dim == 0 || node_len < dim * 4 + 4 || !(node_len - dim * 4 - 4).is_multiple_of(4) {
            return None;
        }
        let l = Layout::new(npts, dim, (node_len - dim * 4 - 4) / 4, medoid);
        (l.nodes_per_sector == u64_at(4) && l.file_size == u64_at(8)).then_some(l)
    }
}

/// The whole `_disk.index` file in memory.
pub fn encode(m: &Matrix, g: &Graph, max_degree: usize) -> (Layout, Vec<u8>) {
    let l = Layout::new(m.rows() as u64, m.dim as u64, max_degree as u64, u64::from(g.medoid));
    let mut out = vec![0u8; l.file_size as usize];
    l.header(&mut out[..SECTOR_BYTES as usize]);
    for id in 0..m.rows() {
        let (off, inner) = l.locate(id as u64);
        let at = off as usize + inner;
        let rec = &mut out[at..at + l.node_len as usize];
        for (j, x) in m.row(id).iter().enumerate() {
            rec[j * 4..j * 4 + 4].copy_from_slice(&x.to_le_bytes());
        }
        let nbrs = &g.adj[id];
        let base = m.dim * 4;
        rec[base..base + 4].copy_from_slice(&(nbrs.len() as u32).to_le_bytes());
        for (j, nb) in nbrs.iter().enumerate() {
            rec[base + 4 + j * 4..base + 8 + j * 4].copy_from_slice(&nb.to_le_bytes());
        }
    }
    (l, out)
}

/// One node record parsed from the bytes of its read.
pub struct Node {
    pub vector: Vec<f32>,
    pub neighbours: Vec<u32>,
}

/// Parses node `id` from the data of its read; `None` if the record is
/// malformed (too short, degree over R, neighbour id out of range).
pub fn parse_node(l: &Layout, id: u64, read: &[u8]) -> Option<Node> {
    let (_, inner) = l.locate(id);
    let rec = read.get(inner..inner + l.node_len as usize)?;
    let dim = l.dim as usize;
    let vector = rec[..dim * 4].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
    let count = u32::from_le_bytes(rec[dim * 4..dim * 4 + 4].try_into().expect("4 bytes")) as usize;
    if count as u64 > l.max_degree {
        return None;
    }
    let ids = &rec[dim * 4 + 4..dim * 4 + 4 + count * 4];
    let neighbours: Vec<u32> =
        ids.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
    neighbours.iter().all(|&n| u64::from(n) < l.npts).then_some(Node { vector, neighbours })
}

#[cfg(test)]
mod tests {
    use super::super::data::base_vectors;
    use super::super::graph::{BuildParams, build};
    use super::*;

    #[test]
    fn sizes_match_the_spec_table() {
        // 100k × 128, R 64: 772 B nodes, 5 per sector, 81 924 096 bytes (spec §3.2).
        let l = Layout::new(100_000, 128, 64, 37343);
        assert_eq!((l.node_len, l.nodes_per_sector, l.file_size), (772, 5, 81_924_096));
        // 1536-d, R 64: 6404 B nodes spanning two sectors.
        let l = Layout::new(10, 1536, 64, 0);
        assert_eq!((l.node_len, l.nodes_per_sector, l.read_len()), (6404, 0, 8192));
        assert_eq!(l.locate(3), ((1 + 3 * 2) * 4096, 0));
    }

    #[test]
    fn layout_round_trips() {
        for dim in [16usize, 1100] {
            let m = base_vectors(9, 120, dim, true);
            let g =
                build(&m, &BuildParams { max_degree: 8, build_list: 16, alpha: 1.2, seed: 9, passes: 2, threads: 2 });
            let (l, bytes) = encode(&m, &g, 8);
            assert_eq!(bytes.len() as u64, l.file_size);
            assert_eq!(Layout::parse_header(&bytes[..4096]), Some(l));
            for id in 0..120u64 {
                let (off, _) = l.locate(id);
                assert!(off + l.read_len() <= l.file_size);
                let read = &bytes[off as usize..(off + l.read_len()) as usize];
                let node = parse_node(&l, id, read).expect("node parses");
                assert_eq!(node.vector, m.row(id as usize));
                assert_eq!(node.neighbours, g.adj[id as usize]);
            }
        }
    }
}
