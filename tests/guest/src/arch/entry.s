/* entry.s: the PVH boot path. A PVH loader enters pvh_entry in 32-bit protected mode, paging
 * off, %ebx = hvm_start_info. We switch to long mode with the static tables of tables.s and
 * drop to ring 3 (user_entry), which clears .bss and calls rust_main(start_info). Ring 0 is
 * interpreted on kvm-pvm (~300 ns an instruction), so this path is kept to a few dozen. */

    .section .note.Xen, "a", @note
    .p2align 2
    .long 4                         /* name size: "Xen\0" */
    .long 8                         /* descriptor size */
    .long 18                        /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .quad pvh_entry                 /* 32-bit entry point (as a 64-bit value, like Linux) */

    .section .text.start, "ax"
    .code32
    .globl pvh_entry
pvh_entry:
    cli
    cld
    movl %ebx, %esi                 /* keep hvm_start_info for rust_main */
    lgdt gdt_ptr
    movl ${CR4_BITS}, %eax
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx          /* EFER.LME */
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl ${CR0_BITS}, %eax
    movl %eax, %cr0
    ljmp ${KERNEL_CS}, $long_mode_entry

    .code64
long_mode_entry:
    movl ${KERNEL_DS}, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    xorl %eax, %eax
    movl %eax, %fs
    movl %eax, %gs
    movl $boot_stack_top, %esp
    lidt idt_ptr(%rip)
    /* Patch the TSS base into its descriptor (the image lies below 4 GiB) and mark it
     * available: an INIT (warm reset) re-enters here with the busy bit of the last ltr. */
    movb $0x89, gdt_tss+5(%rip)
    movl $tss, %eax
    movw %ax, gdt_tss+2(%rip)
    shrl $16, %eax
    movb %al, gdt_tss+4(%rip)
    movb %ah, gdt_tss+7(%rip)
    movl ${TSS_SEL}, %eax
    ltr %ax
    /* Mask both 8259s: every interrupt comes through the IOAPIC/LAPIC. */
    movb $0xff, %al
    outb %al, $0x21
    outb %al, $0xa1
    /* iretq to ring 3 with IF=1. */
    pushq ${USER_DS}
    pushq $user_stack_top
    pushq $0x202
    pushq ${USER_CS}
    pushq $user_entry
    movl %esi, %edi
    iretq

    .section .text, "ax"
/* Ring 3 from here on, at native speed. */
user_entry:
    movq %rdi, %rbx
    leaq __bss_start(%rip), %rdi
    leaq __bss_end(%rip), %rcx
    subq %rdi, %rcx
    xorl %eax, %eax
    rep stosb
    movq %rbx, %rdi
    call {rust_main}
    ud2
