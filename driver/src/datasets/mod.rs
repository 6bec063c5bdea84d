//! Training data sets in their real on-disk formats: which files a set has
//! (names, subfolders, train/valid split), how big each sample is (the
//! reference's distribution), and the exact bytes of each file.
//!
//! A file is described by a list of [`compose::Seg`]ments: literal container
//! bytes (zip and npy headers, TFRecord length fields, protobuf framing),
//! generated payload, and checksums computed over the bytes as they are
//! emitted. [`compose::Composer`] streams a file's bytes front to back into
//! I/O buffers, so a 300 MB file never exists in memory.
//!
//! Every payload byte (image/array data) is the data generator's stream for
//! the file's object key, so a reader can verify it without a stored copy;
//! see [`compose::Layout::verify`] for what is and is not verifiable.

pub mod compose;
pub mod formats;
pub mod sizes;

use crate::config::training::{Format, TrainingConfig};
use compose::Layout;

/// Training or validation files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Valid,
}

impl Split {
    pub fn folder(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
        }
    }
}

/// What determines a data set's files and bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSpec {
    pub folder: String,
    pub format: Format,
    pub num_files_train: u64,
    pub num_files_eval: u64,
    pub samples_per_file: u64,
    pub record_length_bytes: f64,
    pub record_length_bytes_stdev: f64,
    pub subfolders_train: u64,
    pub subfolders_eval: u64,
    /// Seed of the sample sizes and of every payload byte.
    pub seed: u64,
}

impl DatasetSpec {
    pub fn from_config(t: &TrainingConfig, seed: u64) -> DatasetSpec {
        let d = &t.dataset;
        DatasetSpec {
            folder: d.data_folder.trim_matches('/').to_string(),
            format: d.format,
            num_files_train: d.num_files_train,
            num_files_eval: d.num_files_eval,
            samples_per_file: d.num_samples_per_file,
            record_length_bytes: d.record_length_bytes,
            record_length_bytes_stdev: d.record_length_bytes_stdev,
            subfolders_train: d.num_subfolders_train,
            subfolders_eval: d.num_subfolders_eval,
            seed,
        }
    }

    /// Files of a split.
    pub fn count(&self, split: Split) -> u64 {
        match split {
            Split::Train => self.num_files_train,
            Split::Valid => self.num_files_eval,
        }
    }

    /// Object name of file `i` of `split`: `<folder>/<split>/[<i mod k>/]img_<i>_of_<N>.<ext>`
    /// with `i` zero-padded to the width of `N` (DLIO's names).
    pub fn name(&self, split: Split, i: u64) -> String {
        let n = self.count(split);
        let width = n.to_string().len();
        let k = match split {
            Split::Train => self.subfolders_train,
            Split::Valid => self.subfolders_eval,
        };
        let sub = if k > 1 { format!("{}/", i % k) } else { String::new() };
        format!("{}/{}/{sub}img_{i:0width$}_of_{n}.{}", self.folder, split.folder(), self.format.extension())
    }

    /// The layout (segments, size, payload map) of file `i` of `split`.
    pub fn layout(&self, split: Split, i: u64) -> Result<Layout, String> {
        let (dim1, dim2) =
            sizes::draw_dims(self.seed, split, i, self.record_length_bytes, self.record_length_bytes_stdev);
        let name = self.name(split, i);
        let key = crate::datagen::object_key(&name);
        let shape = formats::Shape { dim1, dim2, samples: self.samples_per_file };
        let segs = formats::segments(self.format, &shape)?;
        Ok(Layout::new(segs, self.seed, key, self.samples_per_file))
    }
}
