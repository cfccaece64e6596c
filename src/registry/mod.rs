//! Model packages on disk: manifest, verification, writing. (Versions, promotion and
//! rollback build on this.)

pub mod card;
pub mod package;
pub mod replay;
pub mod versions;

pub use package::{Manifest, ModelPackage, PackageError};

#[cfg(test)]
mod crash;
