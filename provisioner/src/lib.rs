//! berth's provisioner: OCI images to root filesystems (see issue "Provisioner").
