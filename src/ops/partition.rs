//! How a normalization's reductions split their work: each item (a channel of
//! batch norm, a (sample, group) of group norm) is `rows` runs of `len`
//! values (batch norm: the samples' planes); a part is a block of whole rows,
//! or, where the rows are too few, a chunk of one row. The statistics passes
//! launch parts x items workgroups, enough to fill a GPU at 16 channels.

/// Workgroups a normalization pass aims at with a GPU's built-in choices:
/// about 8 of 256 invocations per compute unit on a 132-unit H100 (one full
/// wave), more than enough for smaller GPUs.
pub const GPU_TARGET_WORKGROUPS: usize = 1024;
/// On a CPU adapter, which runs workgroups a few at a time on its cores.
pub const CPU_TARGET_WORKGROUPS: usize = 64;
/// The fewest values a part gets (2 per invocation of a 256-wide workgroup),
/// so that small layers do not pay a partial per handful of values.
pub const MIN_PART_VALUES: usize = 512;
/// The most parts per item asked for (a row's chunks can round it up to
/// under twice this): the pass that merges them reads a few partials per
/// invocation.
pub const MAX_PARTS: usize = 1024;

/// The parts of every item: `parts` = ceil(rows / rows_per_part) x
/// ceil(len / chunk), none of them empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    pub parts: usize,
    pub rows_per_part: usize,
    pub chunk: usize,
}

impl Partition {
    /// One part per item.
    pub fn whole(rows: usize, len: usize) -> Self {
        Partition {
            parts: 1,
            rows_per_part: rows.max(1),
            chunk: len.max(1),
        }
    }

    /// Parts so that `items` x parts reaches `target` workgroups, each part
    /// of at least `min_part` values (where the item has them), at most
    /// `MAX_PARTS`; whole rows first, chunks of a row where rows run out.
    pub fn split(items: usize, rows: usize, len: usize, target: usize, min_part: usize) -> Self {
        let (rows, len) = (rows.max(1), len.max(1));
        let wanted = target.div_ceil(items.max(1));
        let parts = wanted
            .min((rows * len).div_ceil(min_part.max(1)))
            .clamp(1, MAX_PARTS);
        if parts <= rows {
            let per = rows.div_ceil(parts);
            Partition {
                parts: rows.div_ceil(per),
                rows_per_part: per,
                chunk: len,
            }
        } else {
            let chunk = len.div_ceil(parts.div_ceil(rows));
            Partition {
                parts: rows * len.div_ceil(chunk),
                rows_per_part: 1,
                chunk,
            }
        }
    }
}
