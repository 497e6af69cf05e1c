//! The project's one random generator: ChaCha12 by name (what rand 0.9's
//! `StdRng` is today), so shuffles, He init, validation splits and the
//! built-in dataset stay the same across dependency upgrades; "resume equals
//! an uninterrupted run" and the built-in dataset depend on it.

pub use rand::SeedableRng;

pub type SeededRng = rand_chacha::ChaCha12Rng;
