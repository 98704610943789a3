//! The one place auth-svc converts between the wire region (`proto::common::v1::Region`)
//! and Clio's (`clio_api::Region`): the Clio client knows nothing of our gRPC enums.

use clio_api::Region;
use proto::common::v1 as pb;

/// The region a request names; `REGION_UNSPECIFIED` and unknown values are `None`.
pub fn from_wire(value: i32) -> Option<Region> {
    match pb::Region::try_from(value).ok()? {
        pb::Region::Unspecified => None,
        pb::Region::Us => Some(Region::Us),
        pb::Region::Eu => Some(Region::Eu),
        pb::Region::Ca => Some(Region::Ca),
        pb::Region::Au => Some(Region::Au),
    }
}

pub fn to_wire(region: Region) -> pb::Region {
    match region {
        Region::Us => pb::Region::Us,
        Region::Eu => pb::Region::Eu,
        Region::Ca => pb::Region::Ca,
        Region::Au => pb::Region::Au,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_round_trip() {
        for region in Region::ALL {
            assert_eq!(from_wire(to_wire(region) as i32), Some(region));
        }
        assert_eq!(from_wire(pb::Region::Unspecified as i32), None);
        assert_eq!(from_wire(99), None);
    }
}
