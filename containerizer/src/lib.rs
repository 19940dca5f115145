//! berth: the containerizer actor and its public handle.
