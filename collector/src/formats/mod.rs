//! Dataset readers (filled in next).
