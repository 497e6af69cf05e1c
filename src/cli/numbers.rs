//! Whole-number flags: each parses the number itself, negatives included,
//! and refuses one out of its range naming the flag and the value
//! ("--batch-size must be 1 to 65536, got -1"), where clap's own parsers
//! took "-1" for a flag ("unexpected argument '-1' found") or said "invalid
//! digit found in string".

use std::ffi::OsStr;
use std::marker::PhantomData;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

/// A whole number of type `T` in `min..=max`.
#[derive(Clone, Copy, Debug)]
pub struct Whole<T> {
    min: u64,
    max: u64,
    kind: PhantomData<T>,
}

/// Any whole number `T` holds from 0 up.
pub fn whole<T: TryFrom<u64>>() -> Whole<T> {
    whole_in(0, u64::MAX)
}

/// A whole number in `min..=max` (and what `T` holds).
pub fn whole_in<T: TryFrom<u64>>(min: u64, max: u64) -> Whole<T> {
    Whole {
        min,
        max,
        kind: PhantomData,
    }
}

/// A count flag's parser that refuses values outside `min..=max`, naming the
/// flag (zero and huge values divided by zero or aborted an allocation).
pub fn bounded(min: usize, max: usize) -> Whole<usize> {
    whole_in(min as u64, max as u64)
}

impl<T: TryFrom<u64>> Whole<T> {
    /// What the flag takes, for the message.
    fn range(&self) -> String {
        match (self.min, self.top()) {
            (min, top) if top >= u64::from(u32::MAX) => format!("a whole number, {min} or more"),
            (min, top) => format!("{min} to {top}"),
        }
    }

    /// The largest value taken: `max`, or the largest `T` holds below it.
    fn top(&self) -> u64 {
        let (mut fits, mut over) = (self.min, self.max);
        if T::try_from(over).is_ok() {
            return over;
        }
        while over - fits > 1 {
            let mid = fits + (over - fits) / 2;
            if T::try_from(mid).is_ok() {
                fits = mid;
            } else {
                over = mid;
            }
        }
        fits
    }

    fn parse_text(&self, text: &str) -> Option<T> {
        let value = text.trim().parse::<i128>().ok()?;
        let value = u64::try_from(value).ok()?;
        (self.min..=self.max).contains(&value).then_some(())?;
        T::try_from(value).ok()
    }
}

impl<T> TypedValueParser for Whole<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        self.parse_text(&text).ok_or_else(|| {
            let flag = arg
                .and_then(|a| a.get_long().map(|l| format!("--{l}")))
                .unwrap_or_else(|| "the value".into());
            let message = format!("{flag} must be {}, got {text}\n", self.range());
            clap::Error::raw(ErrorKind::ValueValidation, message).with_cmd(cmd)
        })
    }
}

/// `cmd` and its subcommands with every option that takes a value
/// accepting one that starts with '-' and a digit ("--seed -1" is the seed
/// -1, refused by its parser, not an unknown flag "-1").
pub fn negative_numbers_as_values(cmd: clap::Command) -> clap::Command {
    use clap::ArgAction::{Count, Help, HelpLong, HelpShort, SetFalse, SetTrue, Version};
    cmd.mut_args(|arg| {
        let switch = matches!(
            arg.get_action(),
            SetTrue | SetFalse | Count | Help | HelpShort | HelpLong | Version
        );
        if !switch && arg.get_long().is_some() {
            arg.allow_negative_numbers(true)
        } else {
            arg
        }
    })
    .mut_subcommands(negative_numbers_as_values)
}
