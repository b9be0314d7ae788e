//! Pure domain logic: no I/O, no clock reads of its own. Time comes in as arguments, which is
//! what lets the tests below each module replay any sequence of observations exactly.

pub mod claims;
pub mod injection;
pub mod leadership;
pub mod lock_record;
pub mod observation;
pub mod reasons;
pub mod status;
pub mod validation;
