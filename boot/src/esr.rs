//! Decoding of ESR_ELx (the Exception Syndrome Register) into words a person can act on.
//!
//! Portable: the fault printer uses it on the IPU, and it is unit-tested on the host.

/// A decoded syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syndrome {
    /// Exception class, ESR[31:26].
    pub ec: u8,
    /// Instruction length bit, ESR[25].
    pub il: bool,
    /// Instruction-specific syndrome, ESR[24:0].
    pub iss: u32,
}

impl Syndrome {
    /// Splits a raw ESR value.
    pub fn new(esr: u64) -> Self {
        Self {
            ec: ((esr >> 26) & 0x3f) as u8,
            il: (esr >> 25) & 1 == 1,
            iss: (esr & 0x1ff_ffff) as u32,
        }
    }

    /// Name of the exception class.
    pub fn class_name(&self) -> &'static str {
        match self.ec {
            0x00 => "unknown reason",
            0x01 => "WFI/WFE trapped",
            0x07 => "SIMD/FP access trapped",
            0x0e => "illegal execution state",
            0x15 => "SVC (AArch64)",
            0x16 => "HVC (AArch64)",
            0x17 => "SMC (AArch64)",
            0x18 => "system register access trapped",
            0x20 => "instruction abort from a lower EL",
            0x21 => "instruction abort (same EL)",
            0x22 => "PC alignment fault",
            0x24 => "data abort from a lower EL",
            0x25 => "data abort (same EL)",
            0x26 => "SP alignment fault",
            0x2f => "SError",
            0x30 | 0x31 => "breakpoint",
            0x32 | 0x33 => "software step",
            0x34 | 0x35 => "watchpoint",
            0x3c => "BRK instruction",
            _ => "other",
        }
    }

    /// Whether this is an instruction or data abort, which carries a fault status code.
    pub fn is_abort(&self) -> bool {
        matches!(self.ec, 0x20 | 0x21 | 0x24 | 0x25)
    }

    /// For aborts: the fault status code (DFSC/IFSC, ISS[5:0]) in words.
    pub fn fault_status(&self) -> Option<&'static str> {
        if !self.is_abort() {
            return None;
        }
        let fsc = self.iss & 0x3f;
        Some(match fsc {
            0x00..=0x03 => "address size fault",
            0x04..=0x07 => "translation fault (address not mapped)",
            0x08..=0x0b => "access flag fault",
            0x0c..=0x0f => "permission fault",
            0x10 => "synchronous external abort",
            0x21 => "alignment fault",
            0x30 => "TLB conflict abort",
            _ => "other fault",
        })
    }

    /// For data aborts: whether the access was a write (ISS.WnR).
    pub fn is_write(&self) -> Option<bool> {
        matches!(self.ec, 0x24 | 0x25).then_some(self.iss & (1 << 6) != 0)
    }

    /// Translation level of a translation/access/permission fault, if any.
    pub fn fault_level(&self) -> Option<u8> {
        let fsc = self.iss & 0x3f;
        (self.is_abort() && (0x04..=0x0f).contains(&fsc)).then_some((fsc & 3) as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_abort_translation_fault_read() {
        // EC=0x25, IL=1, ISS: DFSC=0x06 (translation fault level 2), WnR=0.
        let s = Syndrome::new(0x9600_0006);
        assert_eq!(s.ec, 0x25);
        assert!(s.il);
        assert_eq!(s.class_name(), "data abort (same EL)");
        assert_eq!(
            s.fault_status(),
            Some("translation fault (address not mapped)")
        );
        assert_eq!(s.fault_level(), Some(2));
        assert_eq!(s.is_write(), Some(false));
    }

    #[test]
    fn data_abort_write_permission() {
        let s = Syndrome::new(0x9600_004f);
        assert_eq!(s.is_write(), Some(true));
        assert_eq!(s.fault_status(), Some("permission fault"));
        assert_eq!(s.fault_level(), Some(3));
    }

    #[test]
    fn non_abort_has_no_fault_status() {
        let s = Syndrome::new(0xf200_0000); // BRK #0
        assert_eq!(s.class_name(), "BRK instruction");
        assert_eq!(s.fault_status(), None);
        assert_eq!(s.is_write(), None);
        assert_eq!(Syndrome::new(0).class_name(), "unknown reason");
    }
}
