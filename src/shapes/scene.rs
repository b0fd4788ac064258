//! Scenes of flat-colored shapes on a plain background: what they hold, how they are drawn,
//! and how objects move, appear and disappear across the frames of a clip.

use image::{Rgb, RgbImage};
use nuri_train::data::SplitMix64;

/// Side of every picture and video frame, in pixels.
pub const CANVAS: usize = 64;
/// Frames per clip.
pub const FRAMES: usize = 8;
/// The background's color (palette index 0).
pub const BACKGROUND: [u8; 3] = [128, 128, 128];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
    Cross,
}

impl Shape {
    pub const ALL: [Shape; 5] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Diamond,
        Shape::Cross,
    ];

    /// Whether the point `(dx, dy)` from the center lies inside the shape of radius `r`.
    fn contains(self, dx: f32, dy: f32, r: f32) -> bool {
        match self {
            Shape::Circle => dx * dx + dy * dy <= r * r,
            Shape::Square => dx.abs() <= 0.8 * r && dy.abs() <= 0.8 * r,
            // Pointing up: apex at -r, base at +0.75 r.
            Shape::Triangle => dy >= -r && dy <= 0.75 * r && dx.abs() <= (dy + r) * 0.6,
            Shape::Diamond => dx.abs() + dy.abs() <= r,
            Shape::Cross => {
                let arm = 0.33 * r;
                (dx.abs() <= arm && dy.abs() <= r) || (dy.abs() <= arm && dx.abs() <= r)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Color {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
}

impl Color {
    pub const ALL: [Color; 6] = [
        Color::Red,
        Color::Green,
        Color::Blue,
        Color::Yellow,
        Color::Purple,
        Color::Orange,
    ];

    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [220, 40, 40],
            Color::Green => [40, 170, 60],
            Color::Blue => [40, 80, 220],
            Color::Yellow => [235, 200, 30],
            Color::Purple => [150, 60, 190],
            Color::Orange => [245, 130, 20],
        }
    }
}

/// The GIF palette: the background, then the colors in `Color::ALL` order.
pub fn palette() -> Vec<u8> {
    let mut p = BACKGROUND.to_vec();
    for c in Color::ALL {
        p.extend(c.rgb());
    }
    p
}

/// A shape of one color: what questions name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind {
    pub shape: Shape,
    pub color: Color,
}

/// The two sizes, as radii in pixels.
pub const RADII: [f32; 2] = [6.0, 10.0];

/// One object of a scene, with where it is in each frame (`None`: not visible).
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub kind: Kind,
    pub radius: f32,
    /// Center per frame; a still picture has one entry.
    pub track: Vec<Option<(f32, f32)>>,
}

impl Object {
    pub fn still(kind: Kind, radius: f32, at: (f32, f32), frames: usize) -> Self {
        Self {
            kind,
            radius,
            track: vec![Some(at); frames],
        }
    }
}

/// Where something is or goes: the four sides of the picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Left,
    Right,
    Top,
    Bottom,
}

impl Side {
    pub const ALL: [Side; 4] = [Side::Left, Side::Right, Side::Top, Side::Bottom];

    pub fn opposite(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
            Side::Top => Side::Bottom,
            Side::Bottom => Side::Top,
        }
    }

    /// Unit step in image coordinates (y grows downwards).
    pub fn step(self) -> (f32, f32) {
        match self {
            Side::Left => (-1.0, 0.0),
            Side::Right => (1.0, 0.0),
            Side::Top => (0.0, -1.0),
            Side::Bottom => (0.0, 1.0),
        }
    }
}

/// Draws frame `frame` of the objects (later objects over earlier ones).
pub fn render(objects: &[Object], frame: usize) -> RgbImage {
    let mut img = RgbImage::from_pixel(CANVAS as u32, CANVAS as u32, Rgb(BACKGROUND));
    for o in objects {
        let Some((cx, cy)) = o.track[frame] else {
            continue;
        };
        let r = o.radius;
        let x0 = (cx - r - 1.0).floor().max(0.0) as u32;
        let y0 = (cy - r - 1.0).floor().max(0.0) as u32;
        let x1 = ((cx + r + 1.0).ceil() as u32).min(CANVAS as u32 - 1);
        let y1 = ((cy + r + 1.0).ceil() as u32).min(CANVAS as u32 - 1);
        for y in y0..=y1 {
            for x in x0..=x1 {
                // Pixel centers.
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                if o.kind.shape.contains(dx, dy, r) {
                    img.put_pixel(x, y, Rgb(o.kind.color.rgb()));
                }
            }
        }
    }
    img
}

/// Uniform in `[lo, hi)`.
pub fn uniform(rng: &mut SplitMix64, lo: f32, hi: f32) -> f32 {
    let u = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
    lo + (hi - lo) * u
}

pub fn pick<T: Copy>(rng: &mut SplitMix64, items: &[T]) -> T {
    items[rng.below(items.len())]
}

/// Whether two objects of radii `ra`, `rb` at `a`, `b` keep a clear gap.
fn apart(a: (f32, f32), ra: f32, b: (f32, f32), rb: f32) -> bool {
    let (dx, dy) = (a.0 - b.0, a.1 - b.1);
    (dx * dx + dy * dy).sqrt() >= ra + rb + 3.0
}

/// Whether `track` keeps clear of every placed object in every frame both are visible.
pub fn clear_of(objects: &[Object], track: &[Option<(f32, f32)>], radius: f32) -> bool {
    objects.iter().all(|o| {
        o.track.iter().zip(track).all(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => apart(*a, o.radius, *b, radius),
            _ => true,
        })
    })
}

/// A random center that keeps an object of `radius` inside the picture.
pub fn anywhere(rng: &mut SplitMix64, radius: f32) -> (f32, f32) {
    let m = radius + 2.0;
    (
        uniform(rng, m, CANVAS as f32 - m),
        uniform(rng, m, CANVAS as f32 - m),
    )
}

/// A center clearly on `side` of the picture (and centered across it, ± a little).
pub fn on_side(rng: &mut SplitMix64, side: Side, radius: f32) -> (f32, f32) {
    let c = CANVAS as f32;
    let near = uniform(rng, radius + 2.0, 0.3 * c);
    let across = 0.5 * c + uniform(rng, -0.08 * c, 0.08 * c);
    match side {
        Side::Left => (near, across),
        Side::Right => (c - near, across),
        Side::Top => (across, near),
        Side::Bottom => (across, c - near),
    }
}

/// A straight path of `frames` centers moving towards `side`, `distance` pixels in all,
/// placed at random where it fits.
pub fn moving(
    rng: &mut SplitMix64,
    side: Side,
    radius: f32,
    distance: f32,
    frames: usize,
) -> Vec<Option<(f32, f32)>> {
    let c = CANVAS as f32;
    let m = radius + 2.0;
    let (sx, sy) = side.step();
    // The start is chosen so that the end stays inside.
    let along_lo = m;
    let along_hi = c - m - distance;
    let along = uniform(rng, along_lo, along_hi.max(along_lo + 0.1));
    let across = uniform(rng, m, c - m);
    let start = match side {
        Side::Right => (along, across),
        Side::Left => (c - along, across),
        Side::Bottom => (across, along),
        Side::Top => (across, c - along),
    };
    (0..frames)
        .map(|f| {
            let t = distance * f as f32 / (frames - 1) as f32;
            Some((start.0 + sx * t, start.1 + sy * t))
        })
        .collect()
}
