//! The JSON API's handlers, one file per resource.

pub mod adapters;
pub mod agents;
pub mod data;
pub mod matches;
pub mod spaces;
pub mod training;
pub mod users;
pub mod votes;
pub mod workers;
