//! RFB key events as bytes typed on the guest's serial console (COM1): the VMM emulates no PS/2
//! keyboard, so a key press becomes the character a terminal would send. Printable ASCII,
//! Return, BackSpace, Tab and Escape are typed; Control with a letter gives its control code;
//! every other key (arrows, function keys, ...) is dropped. USB HID keyboard usages
//! (PutUsbScanCodes) map the same way.

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

/// The byte a USB HID keyboard usage (page 7) types on a US layout, with Shift and Control as
/// held; None for keys a serial console has no byte for.
pub fn hid_usage_byte(usage: u8, shift: bool, control: bool) -> Option<u8> {
    const DIGITS: &[u8; 10] = b"1234567890";
    const SHIFTED_DIGITS: &[u8; 10] = b"!@#$%^&*()";
    const PUNCTUATION: &[u8; 11] = b"-=[]\\#;'`,.";
    const SHIFTED_PUNCTUATION: &[u8; 11] = b"_+{}|~:\"~<>";
    let byte = match usage {
        0x04..=0x1d => {
            let letter = b'a' + (usage - 0x04);
            if control {
                return control_code(letter);
            }
            if shift {
                letter.to_ascii_uppercase()
            } else {
                letter
            }
        }
        0x1e..=0x27 if shift => SHIFTED_DIGITS[usize::from(usage - 0x1e)],
        0x1e..=0x27 => DIGITS[usize::from(usage - 0x1e)],
        0x28 | 0x58 => b'\r',
        0x29 => 0x1b,
        0x2a => 0x08,
        0x2b => b'\t',
        0x2c => b' ',
        0x2d..=0x37 if shift => SHIFTED_PUNCTUATION[usize::from(usage - 0x2d)],
        0x2d..=0x37 => PUNCTUATION[usize::from(usage - 0x2d)],
        0x38 if shift => b'?',
        0x38 => b'/',
        _ => return None,
    };
    Some(byte)
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

    #[test]
    fn usb_hid_usages_type_us_layout_characters() {
        let typed: Vec<Option<u8>> = [(0x04, false), (0x04, true), (0x1e, true), (0x27, false)]
            .into_iter()
            .map(|(usage, shift)| hid_usage_byte(usage, shift, false))
            .collect();
        assert_eq!(typed, [Some(b'a'), Some(b'A'), Some(b'!'), Some(b'0')]);
        assert_eq!(hid_usage_byte(0x06, false, true), Some(0x03));
        assert_eq!(hid_usage_byte(0x34, true, false), Some(b'"'));
        assert_eq!(hid_usage_byte(0x38, true, false), Some(b'?'));
        assert_eq!(hid_usage_byte(0x28, false, false), Some(b'\r'));
        assert_eq!(hid_usage_byte(0x52, false, false), None);
    }
}
