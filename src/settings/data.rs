//! The data settings: which dataset, where, how it is cut and normalized,
//! and loading it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result;

use super::Setting;
use crate::data::{Cifar100Labels, DataSource, DataSplit, DatasetKind, channel_statistics};

/// Which data, where, and how it is cut.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSettings {
    /// The format [default: recognised from the files in `path`, else the
    /// built-in set].
    pub dataset: Option<DatasetKind>,
    /// The dataset's folder (none: the built-in set).
    pub path: Option<PathBuf>,
    pub cifar100_labels: Cifar100Labels,
    /// Image folders: the side of the square images the model sees.
    pub image_size: usize,
    pub synthetic_train: usize,
    pub synthetic_test: usize,
    /// Training images held out as the evaluated validation set.
    pub val_split: Option<usize>,
}

impl Default for DataSettings {
    fn default() -> Self {
        DataSettings {
            dataset: None,
            path: None,
            cifar100_labels: Cifar100Labels::Fine,
            image_size: 64,
            synthetic_train: 5000,
            synthetic_test: 1000,
            val_split: None,
        }
    }
}

impl DataSettings {
    /// The format as declared (for display): `dataset`, else CIFAR-10 when
    /// a folder is given, else the built-in set. `source` looks into the folder.
    pub fn kind(&self) -> DatasetKind {
        self.dataset.unwrap_or(if self.path.is_some() {
            DatasetKind::Cifar10
        } else {
            DatasetKind::Synthetic
        })
    }

    /// The format: `dataset`, else what the folder holds, else the built-in set.
    fn detected_kind(&self) -> Result<DatasetKind> {
        Ok(match (self.dataset, &self.path) {
            (Some(kind), _) => kind,
            (None, Some(dir)) => DataSource::detect(dir)?,
            (None, None) => DatasetKind::Synthetic,
        })
    }

    /// What these settings select, checked.
    pub fn source(&self) -> Result<DataSource> {
        let source = DataSource {
            kind: self.detected_kind()?,
            path: self.path.clone(),
            cifar100_labels: self.cifar100_labels,
            image_size: self.image_size,
            synthetic_train: self.synthetic_train,
            synthetic_test: self.synthetic_test,
            val_split: self.val_split,
        };
        source.validate().map_err(anyhow::Error::msg)?;
        Ok(source)
    }

    pub fn load(&self, seed: u64) -> Result<DataSplit> {
        load_source(&self.source()?, seed)
    }

    /// A saved run's data source, moved to `path` when that is given.
    pub fn relocate(&self, saved: &DataSource) -> DataSource {
        DataSource {
            path: self.path.clone().or_else(|| saved.path.clone()),
            ..saved.clone()
        }
    }

    /// The data settings given (in `given`, or set to other than their
    /// default) that select other data than `saved`; the folder alone may
    /// move the same data.
    pub fn contradictions(&self, saved: &DataSource, given: &BTreeSet<Setting>) -> Vec<String> {
        let d = DataSettings::default();
        let kind = |k: DatasetKind| format!("{k:?}").to_lowercase();
        let rows = [
            (
                Setting::Dataset,
                self.dataset.map(kind),
                d.dataset.map(kind),
                Some(kind(saved.kind)),
            ),
            (
                Setting::Cifar100Labels,
                Some(format!("{:?}", self.cifar100_labels)),
                Some(format!("{:?}", d.cifar100_labels)),
                Some(format!("{:?}", saved.cifar100_labels)),
            ),
            (
                Setting::ImageSize,
                Some(self.image_size.to_string()),
                Some(d.image_size.to_string()),
                Some(saved.image_size.to_string()),
            ),
            (
                Setting::SyntheticTrain,
                Some(self.synthetic_train.to_string()),
                Some(d.synthetic_train.to_string()),
                Some(saved.synthetic_train.to_string()),
            ),
            (
                Setting::SyntheticTest,
                Some(self.synthetic_test.to_string()),
                Some(d.synthetic_test.to_string()),
                Some(saved.synthetic_test.to_string()),
            ),
            (
                Setting::ValSplit,
                self.val_split.map(|v| v.to_string()),
                d.val_split.map(|v| v.to_string()),
                saved.val_split.map(|v| v.to_string()),
            ),
        ];
        let mut refused: Vec<String> = rows
            .into_iter()
            .filter(|(setting, mine, default, theirs)| {
                (given.contains(setting) || mine != default) && mine != theirs
            })
            .map(|(setting, mine, _, theirs)| {
                let show = |v: Option<String>| v.unwrap_or_else(|| "none".into());
                format!("{setting} {} (the run has {})", show(mine), show(theirs))
            })
            .collect();
        // A folder moves a run's files; the built-in set has none, so a
        // folder given to it would be ignored: refuse it instead.
        if let (Some(dir), DatasetKind::Synthetic) = (&self.path, saved.kind) {
            refused.push(format!(
                "{} {} (the run trains on the built-in set, which reads no folder)",
                Setting::Data,
                dir.display()
            ));
        }
        refused
    }
}

/// How images are normalized before the network.
#[derive(Clone, Debug, PartialEq)]
pub enum Normalize {
    Cifar,
    Imagenet,
    Dataset,
    Values([f32; 3], [f32; 3]),
}

impl Normalize {
    pub const CIFAR: ([f32; 3], [f32; 3]) = ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]);
    pub const IMAGENET: ([f32; 3], [f32; 3]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "cifar" => return Ok(Normalize::Cifar),
            "imagenet" => return Ok(Normalize::Imagenet),
            "dataset" => return Ok(Normalize::Dataset),
            _ => {}
        }
        let values: Vec<f32> = text
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("'{text}': expected cifar, imagenet, dataset or six numbers"))?;
        match values.as_slice() {
            [m0, m1, m2, s0, s1, s2] if [*s0, *s1, *s2].iter().all(|&s| s > 0.0) => {
                Ok(Normalize::Values([*m0, *m1, *m2], [*s0, *s1, *s2]))
            }
            _ => Err(format!(
                "'{text}': expected six numbers MEAN_R,MEAN_G,MEAN_B,STD_R,STD_G,STD_B with std > 0"
            )),
        }
    }

    /// The normalization when none is set: CIFAR's on CIFAR data, else the
    /// training set's own; for weights of another tool (`foreign_weights`),
    /// torchvision's, which they expect.
    pub fn default_for(kind: DatasetKind, foreign_weights: bool) -> Self {
        match kind {
            _ if foreign_weights => Normalize::Imagenet,
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => Normalize::Cifar,
            _ => Normalize::Dataset,
        }
    }

    /// Mean and std for `data` (whose own statistics `Dataset` uses).
    pub fn values(&self, data: &DataSplit) -> ([f32; 3], [f32; 3]) {
        match self {
            Normalize::Cifar => Self::CIFAR,
            Normalize::Imagenet => Self::IMAGENET,
            Normalize::Values(m, s) => (*m, *s),
            Normalize::Dataset => {
                let (m, s) = channel_statistics(&data.train);
                ([m[0], m[1], m[2]], [s[0], s[1], s[2]])
            }
        }
    }
}

/// Loads `source`; an image folder or shards (indexed, not decoded) says on
/// stderr what it indexes and how long that took.
pub fn load_source(source: &DataSource, seed: u64) -> Result<DataSplit> {
    let pictures = matches!(source.kind, DatasetKind::Folder | DatasetKind::Shards);
    let dir = source.path.as_deref().unwrap_or(std::path::Path::new("."));
    if pictures {
        eprintln!("indexing {} ...", dir.display());
    }
    let started = web_time::Instant::now();
    let data = source.load(seed)?;
    if pictures {
        eprintln!(
            "indexed {} training and {} evaluation pictures in {:.2} s",
            data.train.len(),
            data.test.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(data)
}
