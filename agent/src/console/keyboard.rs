//! RFB key events as bytes typed on the guest's serial console (COM1): the VMM emulates no PS/2
//! keyboard, so a key press becomes the character a terminal would send. Printable ASCII,
//! Return, BackSpace, Tab and Escape are typed; Control with a letter gives its control code;
//! every other key (arrows, function keys, ...) is dropped.

/// X11 keysyms this module knows (RFC 6143 section 7.5.4 refers to them).
mod keysym {
    pub const BACKSPACE: u32 = 0xff08;
    pub const TAB: u32 = 0xff09;
    pub const RETURN: u32 = 0xff0d;
    pub const ESCAPE: u32 = 0xff1b;
    pub const KP_ENTER: u32 = 0xff8d;
    pub const CONTROL_L: u32 = 0xffe3;
    pub const CONTROL_R: u32 = 0xffe4;
}

/// Turns key events into console bytes, remembering whether Control is held.
#[derive(Debug, Default)]
pub struct SerialKeyboard {
    control_held: [bool; 2],
}

impl SerialKeyboard {
    /// The byte a key event types, if any.
    pub fn key(&mut self, down: bool, keysym: u32) -> Option<u8> {
        match keysym {
            keysym::CONTROL_L => self.control_held[0] = down,
            keysym::CONTROL_R => self.control_held[1] = down,
            _ => {}
        }
        if !down {
            return None;
        }
        let control = self.control_held.contains(&true);
        match keysym {
            0x20..=0x7e if control => control_code(keysym as u8),
            0x20..=0x7e => Some(keysym as u8),
            keysym::RETURN | keysym::KP_ENTER => Some(b'\r'),
            keysym::BACKSPACE => Some(0x08),
            keysym::TAB => Some(b'\t'),
            keysym::ESCAPE => Some(0x1b),
            _ => None,
        }
    }
}

/// Control-`c` as a terminal sends it (`@`, letters and `[\]^_` map to 0x00-0x1f).
fn control_code(c: u8) -> Option<u8> {
    match c.to_ascii_uppercase() {
        c @ b'@'..=b'_' => Some(c & 0x1f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(keyboard: &mut SerialKeyboard, keysym: u32) -> Option<u8> {
        let typed = keyboard.key(true, keysym);
        assert_eq!(keyboard.key(false, keysym), None, "releases type nothing");
        typed
    }

    #[test]
    fn presses_type_what_a_terminal_would() {
        let mut keyboard = SerialKeyboard::default();
        let typed: Vec<u8> = [
            0x65, 0x63, 0x68, 0x6f, 0x20, 0x41, 0x7e, 0xff0d, 0xff08, 0xff09,
        ]
        .into_iter()
        .filter_map(|k| press(&mut keyboard, k))
        .collect();
        assert_eq!(typed, b"echo A~\r\x08\t");
        assert_eq!(
            press(&mut keyboard, 0xff51),
            None,
            "arrow keys have no byte"
        );
        assert_eq!(
            press(&mut keyboard, 0xffe1),
            None,
            "shift alone types nothing"
        );
    }

    #[test]
    fn control_combines_with_letters() {
        let mut keyboard = SerialKeyboard::default();
        keyboard.key(true, keysym::CONTROL_R);
        assert_eq!(keyboard.key(true, u32::from(b'c')), Some(0x03));
        assert_eq!(keyboard.key(true, u32::from(b'[')), Some(0x1b));
        assert_eq!(keyboard.key(true, u32::from(b'1')), None);
        keyboard.key(false, keysym::CONTROL_R);
        assert_eq!(keyboard.key(true, u32::from(b'c')), Some(b'c'));
    }
}
