/* tables.s: every static ring-0 table, fully built at assembly time so that boot executes no
 * loops in (interpreted) ring 0: identity page tables, GDT (Linux layout), TSS, IDT, stacks,
 * and the small state ring 0 shares with ring 3 (interrupt counters, AP reports). */

    .section .data.pagetables, "aw"
    .p2align 12
/* Identity map of the first 4 GiB with 2 MiB pages, user-accessible (ring 3 drives the
 * hardware directly where it can); the top GiB (LAPIC, IOAPIC, MMIO) uncached. */
    .globl pml4
pml4:
    .quad pdpt + 0x27
    .fill 511, 8, 0
pdpt:
    .quad page_dirs + 0x0000 + 0x27
    .quad page_dirs + 0x1000 + 0x27
    .quad page_dirs + 0x2000 + 0x27
    .quad page_dirs + 0x3000 + 0x27
    .fill 508, 8, 0
page_dirs:
    .set page, 0
    .rept 3 * 512
    .quad (page << 21) + 0xe7       /* P RW US A D PS */
    .set page, page + 1
    .endr
    .rept 512
    .quad (page << 21) + 0xff       /* ... plus PWT PCD */
    .set page, page + 1
    .endr

    .section .data, "aw"
    .p2align 4
    .globl gdt
gdt:
    .quad 0                         /* 0x00 null */
    .quad 0x00cf9a000000ffff        /* 0x08 kernel code, 32-bit */
    .quad 0x00af9b000000ffff        /* 0x10 kernel code, 64-bit */
    .quad 0x00cf93000000ffff        /* 0x18 kernel data */
    .quad 0x00cffb000000ffff        /* 0x23 user code, 32-bit */
    .quad 0x00cff3000000ffff        /* 0x2b user data */
    .quad 0x00affb000000ffff        /* 0x33 user code, 64-bit */
    .quad 0                         /* 0x38 unused */
gdt_tss:                            /* 0x40 TSS; entry.s patches the base */
    .word tss_end - tss - 1
    .word 0
    .byte 0
    .byte 0x89
    .byte 0
    .byte 0
    .long 0
    .long 0
gdt_end:
    .globl gdt_ptr
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt

    .p2align 4
tss:
    .long 0
    .quad ist_fault_top             /* rsp0 (unused: every vector has an IST) */
    .quad 0, 0
    .quad 0
    .quad ist_service_top           /* IST1: ring-3 service traps (int3) */
    .quad ist_irq_top               /* IST2: external interrupts */
    .quad ist_fault_top             /* IST3: exceptions */
    .quad ist_critical_top          /* IST4: NMI, #DF, #MC */
    .quad 0, 0, 0
    .quad 0
    .word 0
    .word tss_end - tss             /* no I/O permission bitmap */
tss_end:

/* IDT: vector n's stub is at VECTOR_STUBS + 16 n (see vectors.s and the asserts in link.ld). */
    .macro idt_gate vector, ist, type
    .word ({VECTOR_STUBS} + \vector * 16) & 0xffff
    .word {KERNEL_CS}
    .byte \ist, \type
    .word ({VECTOR_STUBS} + \vector * 16) >> 16
    .long 0, 0
    .endm

    .p2align 4
idt:
    .set vec, 0
    .rept 256
    .if vec == 3
    idt_gate vec, 1, 0xee           /* service trap: DPL 3, IST1 */
    .elseif vec >= 32
    idt_gate vec, 2, 0x8e           /* interrupt: IST2 */
    .elseif vec == 2 || vec == 8 || vec == 18
    idt_gate vec, 4, 0x8e           /* NMI, #DF, #MC: IST4 */
    .else
    idt_gate vec, 3, 0x8e           /* other exceptions: IST3 */
    .endif
    .set vec, vec + 1
    .endr
idt_end:
    .globl idt_ptr
idt_ptr:
    .word idt_end - idt - 1
    .quad idt
null_idt_ptr:
    .word 0
    .quad 0

/* State shared with ring 3 (declared in arch/mod.rs). */
    .p2align 3
    .globl lapic_base
lapic_base:
    .quad 0xfee00000
    .globl irq_defer_eoi
irq_defer_eoi:                      /* vectors whose EOI ring 3 sends; 0xff is spurious */
    .quad 0, 0, 0, 0x8000000000000000

    .section .bss, "aw", @nobits
    .p2align 3
    .globl irq_counts
irq_counts:
    .fill 256, 8, 0
    .globl irq_total
irq_total:
    .quad 0
    .globl bsp_apic_id
bsp_apic_id:
    .quad 0
    .globl ap_online_by_apic
ap_online_by_apic:
    .fill 256, 1, 0

    .p2align 12
    .fill 4096, 1, 0
boot_stack_top:
    .fill 4096, 1, 0
ist_service_top:
    .fill 4096, 1, 0
ist_irq_top:
    .fill 4096, 1, 0
ist_fault_top:
    .fill 4096, 1, 0
ist_critical_top:
    .fill {USER_STACK_SIZE}, 1, 0
    .globl user_stack_top
user_stack_top:
