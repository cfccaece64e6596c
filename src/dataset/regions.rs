//! Regions of interest per group (camera view) of a grouped data set: a CSV
//! `group,x,y,width,height` (pixels of the view's frames), the rectangle a user would draw
//! around where things happen in that view. Training, `eval` and `fewshot-bench` cut every
//! frame of a group to its region, as the daemon cuts a pipeline's frames to
//! `[pipeline.region]`.

use std::collections::HashMap;
use std::path::Path;

use super::{Dataset, DatasetError};
use image::DynamicImage;

use crate::features::{ChangeLocator, Raw, Region};

/// Read a regions file: header `group,x,y,width,height`, one row per group.
pub fn load(path: &Path) -> Result<HashMap<String, Region>, DatasetError> {
    let bad = |reason: String| DatasetError::Layout {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let want = ["group", "x", "y", "width", "height"];
    if headers.iter().collect::<Vec<_>>() != want {
        return Err(bad(format!(
            "expected the header `{}`, got `{}`",
            want.join(","),
            headers.iter().collect::<Vec<_>>().join(",")
        )));
    }
    let mut out = HashMap::new();
    for (n, row) in reader.records().enumerate() {
        let row = row.map_err(|e| bad(e.to_string()))?;
        let num = |i: usize| -> Result<u32, DatasetError> {
            let v = row.get(i).unwrap_or_default();
            v.trim().parse().map_err(|_| {
                bad(format!(
                    "row {}: `{}` is `{v}`, not a whole number of pixels",
                    n + 2,
                    want[i]
                ))
            })
        };
        let region = Region {
            x: num(1)?,
            y: num(2)?,
            width: num(3)?,
            height: num(4)?,
        };
        let group = row.get(0).unwrap_or_default().to_string();
        if out.insert(group.clone(), region).is_some() {
            return Err(bad(format!("group `{group}` is listed twice")));
        }
    }
    Ok(out)
}

impl Dataset {
    /// Cut every image to its group's region. An item without a group or whose group the
    /// regions do not list, or a region outside its frame, is an error naming it.
    pub fn crop_to_regions(&mut self, regions: &HashMap<String, Region>) -> anyhow::Result<()> {
        for item in &mut self.items {
            let Raw::Image(img) = &item.raw else {
                anyhow::bail!("{}: regions apply to images only", item.source);
            };
            let group = item.group.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: not in a group folder (`<split>/<group>/<class>/`), so it has no region",
                    item.source
                )
            })?;
            let region = regions
                .get(group)
                .ok_or_else(|| anyhow::anyhow!("the regions file has no row for `{group}`"))?;
            let cut = region
                .crop(img)
                .map_err(|e| anyhow::anyhow!("{}: {e}", item.source))?;
            item.raw = Raw::Image(cut);
        }
        Ok(())
    }
}

impl Dataset {
    /// Cut every image to the square around its largest change from its view's reference
    /// ([`crate::features::ChangeLocator`]): the mean of the first `shots` images (file
    /// order) of class `reference` in the same group — the frames a person teaching that
    /// view would send of its empty state.
    pub fn crop_to_changes(&mut self, reference: &str, shots: usize) -> anyhow::Result<()> {
        let class = self
            .classes
            .iter()
            .position(|c| c == reference)
            .ok_or_else(|| anyhow::anyhow!("no class `{reference}` to take references from"))?;
        let mut groups: Vec<Option<String>> = self.items.iter().map(|i| i.group.clone()).collect();
        groups.sort();
        groups.dedup();
        for group in groups {
            let frames: Vec<&DynamicImage> = self
                .items
                .iter()
                .filter(|i| i.group == group && i.label == class)
                .filter_map(|i| match &i.raw {
                    Raw::Image(img) => Some(img),
                    Raw::Audio(_) => None,
                })
                .take(shots)
                .collect();
            let name = group.as_deref().unwrap_or("(no group)");
            let locator = ChangeLocator::from_references(&frames)
                .map_err(|e| anyhow::anyhow!("view `{name}`: {e}"))?;
            for item in self.items.iter_mut().filter(|i| i.group == group) {
                let Raw::Image(img) = &item.raw else {
                    anyhow::bail!("{}: changes apply to images only", item.source);
                };
                let cut = locator
                    .cut(img)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", item.source))?;
                item.raw = Raw::Image(cut);
            }
        }
        Ok(())
    }

    /// Resize every image to `width`×`height` with the filter [`crate::features::ImageSpec`]
    /// resizes with, so that the model's own resize is then a no-op: the tensors are the
    /// same, and the exemplars a package keeps are stored at the model's input size.
    pub fn resize_images(&mut self, width: u32, height: u32) {
        for item in &mut self.items {
            if let Raw::Image(img) = &item.raw
                && (img.width(), img.height()) != (width, height)
            {
                item.raw = Raw::Image(img.resize_exact(
                    width,
                    height,
                    image::imageops::FilterType::Triangle,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{LoadOptions, load as load_set};
    use image::{Rgb, RgbImage};

    #[test]
    fn a_grouped_tree_loads_with_groups_and_crops_to_each_groups_region() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("classes.txt"), "0\tempty\n1\tparcel\n").expect("classes");
        for (view, class, value) in [
            ("a", "empty", 10u8),
            ("a", "parcel", 20),
            ("b", "empty", 30),
        ] {
            let d = dir.path().join("val").join(view).join(class);
            std::fs::create_dir_all(&d).expect("mkdir");
            let mut img = RgbImage::from_pixel(8, 6, Rgb([0, 0, 0]));
            img.put_pixel(6, 5, Rgb([value, 0, 0]));
            img.save(d.join("0.png")).expect("png");
        }
        // A view's timeline folder is not a class and is not read.
        std::fs::create_dir_all(dir.path().join("val/a/timeline")).expect("mkdir");
        let mut ds = load_set(dir.path(), "val", &LoadOptions::default()).expect("grouped");
        assert_eq!(ds.classes, vec!["empty", "parcel"]);
        let groups: Vec<_> = ds
            .items
            .iter()
            .map(|i| (i.label, i.group.clone()))
            .collect();
        assert_eq!(
            groups,
            vec![
                (0, Some("a".into())),
                (0, Some("b".into())),
                (1, Some("a".into()))
            ]
        );
        let csv = dir.path().join("regions.csv");
        std::fs::write(&csv, "group,x,y,width,height\na,6,5,2,1\nb,5,4,3,2\n").expect("csv");
        ds.crop_to_regions(&load(&csv).expect("regions"))
            .expect("crop");
        let Raw::Image(img) = &ds.items[0].raw else {
            panic!("image")
        };
        assert_eq!((img.width(), img.height()), (2, 1));
        assert_eq!(img.to_rgb8().get_pixel(0, 0), &Rgb([10, 0, 0]));

        std::fs::write(&csv, "group,x,y,width,height\na,7,5,2,1\n").expect("csv");
        let msg = ds
            .crop_to_regions(&load(&csv).expect("regions"))
            .expect_err("outside")
            .to_string();
        assert!(msg.contains("outside the 2x1 frame"), "{msg}");
        std::fs::write(&csv, "group,x,y,w,h\n").expect("csv");
        assert!(
            load(&csv)
                .expect_err("header")
                .to_string()
                .contains("expected the header")
        );
    }
}
