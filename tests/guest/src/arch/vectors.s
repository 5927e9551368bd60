/* vectors.s: the 256 interrupt/exception stubs (16 bytes each, at VECTOR_STUBS), the external
 * interrupt handler (count, EOI) and the exception handler (print a panic line, halt). Every
 * vector runs on an IST stack (tables.s), so ring-3 code can be interrupted anywhere. */

    .section .text.vectors, "ax"
    .globl vector_stubs
vector_stubs:
    .set vec, 0
    .rept 256
    .p2align 4
    .if vec == 3
    jmp service_entry
    .elseif vec < 32
    .if vec != 8 && (vec < 10 || vec > 14) && vec != 17 && vec != 21 && vec != 29 && vec != 30
    pushq $0                        /* no CPU error code: push a zero to share one frame layout */
    .endif
    pushq $vec
    jmp exception_entry
    .else
    pushq $vec
    jmp irq_entry
    .endif
    .set vec, vec + 1
    .endr
    .p2align 4
    .globl vector_stubs_end
vector_stubs_end:

    .section .text, "ax"
/* External interrupt: [vector] rip cs rflags rsp ss. Count it, EOI unless ring 3 asked to send
 * that EOI itself (level-triggered sources it must quiesce first), return. */
irq_entry:
    pushq %rax
    pushq %rdx
    movzbl 16(%rsp), %eax
    incq irq_counts(,%rax,8)
    incq irq_total(%rip)
    movl %eax, %edx
    shrl $6, %edx
    movq irq_defer_eoi(,%rdx,8), %rdx
    btq %rax, %rdx
    jc 1f
    movq lapic_base(%rip), %rdx
    movl $0, 0xb0(%rdx)
1:  popq %rdx
    popq %rax
    addq $8, %rsp
    iretq

/* Unplanned exception: [vector] [error code] rip cs rflags rsp ss.
 * Prints "vireo-test-guest: panic: <name> rip=0x<hex>" on COM1 and halts this CPU. */
exception_entry:
    movq (%rsp), %rbx
    movq 16(%rsp), %r12
    leaq panic_prefix(%rip), %rsi
    movl $panic_prefix_end - panic_prefix, %ecx
    call com1_write
    shlq $4, %rbx
    leaq exception_names(%rip), %rax
    movq (%rax,%rbx), %rsi
    movq 8(%rax,%rbx), %rcx
    call com1_write
    leaq panic_rip(%rip), %rsi
    movl $panic_rip_end - panic_rip, %ecx
    call com1_write
    subq $32, %rsp
    movq %rsp, %rdi
    leaq hex_digits(%rip), %r8
    movl $16, %ecx
2:  rolq $4, %r12
    movl %r12d, %eax
    andl $15, %eax
    movb (%r8,%rax), %al
    stosb
    decl %ecx
    jnz 2b
    movb $10, (%rdi)
    movq %rsp, %rsi
    movl $17, %ecx
    call com1_write
    .globl halt_forever
halt_forever:
    cli
    hlt
    jmp halt_forever

/* rep outsb %rcx bytes at %rsi to COM1. */
com1_write:
    movl ${COM1_PORT}, %edx
    rep outsb
    ret

    .section .rodata, "a"
panic_prefix:
    .ascii "vireo-test-guest: panic: "
panic_prefix_end:
panic_rip:
    .ascii " rip=0x"
panic_rip_end:
hex_digits:
    .ascii "0123456789abcdef"

    .macro exception_name text
    .pushsection .rodata.exception_name_text, "a"
1:  .ascii "\text"
2:
    .popsection
    .quad 1b, 2b - 1b
    .endm
    .p2align 3
exception_names:
    exception_name "divide error"
    exception_name "debug"
    exception_name "NMI"
    exception_name "breakpoint in ring 0"
    exception_name "overflow"
    exception_name "bound range exceeded"
    exception_name "invalid opcode"
    exception_name "device not available"
    exception_name "double fault"
    exception_name "coprocessor segment overrun"
    exception_name "invalid TSS"
    exception_name "segment not present"
    exception_name "stack-segment fault"
    exception_name "general protection fault"
    exception_name "page fault"
    exception_name "reserved vector 15"
    exception_name "x87 floating-point error"
    exception_name "alignment check"
    exception_name "machine check"
    exception_name "SIMD floating-point error"
    exception_name "virtualization exception"
    exception_name "control protection"
    exception_name "reserved vector 22"
    exception_name "reserved vector 23"
    exception_name "reserved vector 24"
    exception_name "reserved vector 25"
    exception_name "reserved vector 26"
    exception_name "reserved vector 27"
    exception_name "hypervisor injection"
    exception_name "VMM communication"
    exception_name "security exception"
    exception_name "reserved vector 31"
