//! Harness for berth's end-to-end tests.
