//! Integration and end-to-end tests against the local AWS emulator live in
//! `registrar/` (one binary per area). This library is empty on purpose.
