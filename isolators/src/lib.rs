//! berth's isolator plugin API and built-in isolators.
